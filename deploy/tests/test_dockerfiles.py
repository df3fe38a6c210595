"""The images: docker/processor.Dockerfile, docker/edge.Dockerfile and docker/s3.Dockerfile."""

from __future__ import annotations

import json
import re

import pytest

from conftest import ROOT


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "docker" / name).read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        out.append((op.upper(), rest.strip()))
    return out


def args_of(ins: list[tuple[str, str]], op: str) -> list[str]:
    return [a for o, a in ins if o == op]


def base_args(name: str) -> dict[str, str]:
    """The ARGs declared before the first FROM (the base images)."""
    out = {}
    for op, rest in instructions(name):
        if op == "FROM":
            break
        if op == "ARG":
            out[rest.split("=")[0]] = rest
    return out


@pytest.mark.parametrize("name", ["processor.Dockerfile", "edge.Dockerfile", "s3.Dockerfile"])
def test_builds_offline_with_any_builder(name: str) -> None:
    """No BuildKit-only syntax: the `# syntax=` line makes BuildKit pull a frontend image, and
    cache mounts or COPY --chmod break the legacy builder (and docker-compose v1's)."""
    assert "# syntax=" not in (ROOT / "docker" / name).read_text()
    for op, rest in instructions(name):
        assert "--mount=" not in rest and "--chmod" not in rest, (op, rest)
    assert set(base_args(name)) == {"RUST_IMAGE", "DEBIAN_IMAGE"}


def test_builder_stage_is_shared_by_processor_and_edge() -> None:
    """Identical builder instructions, so the second image reuses the first's layers."""
    def builder(name: str) -> list[tuple[str, str]]:
        ins = instructions(name)
        start = ins.index(("FROM", "${RUST_IMAGE} AS builder"))
        end = ins.index(("FROM", "${DEBIAN_IMAGE} AS runtime"))
        return ins[start:end]
    assert builder("processor.Dockerfile") == builder("edge.Dockerfile")


def test_dependency_layer_knows_every_workspace_member() -> None:
    """The builder copies each member's Cargo.toml before the sources (the dependency layer):
    a new crate must be listed there too, or the image build fails."""
    import tomllib

    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    for name in ("processor.Dockerfile", "edge.Dockerfile"):
        copied = [rest.split()[0].removesuffix("/Cargo.toml") for op, rest in instructions(name)
                  if op == "COPY" and rest.endswith("/") and "/Cargo.toml " in rest + " "]
        assert sorted(copied) == sorted(members), (name, copied)


def test_k8s_runs_the_images_these_dockerfiles_build() -> None:
    """k8s/ names reelay-processor and reelay-edge; scripts/images.sh (make images, the compose
    test) builds exactly those names from these Dockerfiles, as docker-compose.yml does."""
    import yaml

    base = yaml.safe_load((ROOT / "k8s/base/kustomization.yaml").read_text())
    named = {i["name"] for i in base["images"]}
    script = (ROOT / "scripts/images.sh").read_text()
    built = dict(re.findall(r'^build "([a-z0-9-]+):[^"]*" (docker/[a-z0-9]+\.Dockerfile)$', script, re.M))
    assert named <= set(built), (named, built)
    assert built["reelay-processor"] == "docker/processor.Dockerfile"
    assert built["reelay-edge"] == "docker/edge.Dockerfile"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for svc in compose.values():
        image = svc.get("image", "")
        if image.startswith("reelay-"):
            assert svc["build"]["dockerfile"] == built[image.split(":")[0]], svc


@pytest.mark.parametrize("name", ["processor.Dockerfile", "edge.Dockerfile"])
def test_multi_stage_pinned_non_root_exec_form(name: str) -> None:
    ins = instructions(name)
    froms = args_of(ins, "FROM")
    # Base images are build arguments whose defaults are the official images, pinned by tag.
    assert froms[0] == "${RUST_IMAGE} AS builder" and froms[-1] == "${DEBIAN_IMAGE} AS runtime"
    assert re.fullmatch(r"RUST_IMAGE=rust:\d+\.\d+\.\d+-bookworm", base_args(name)["RUST_IMAGE"])
    assert base_args(name)["DEBIAN_IMAGE"] == "DEBIAN_IMAGE=debian:bookworm-slim"
    build = " ".join(args_of(ins, "RUN"))
    assert "cargo build --release --locked -p reelay" in build
    apt = [r for r in args_of(ins, "RUN") if "apt-get install" in r][0]
    assert "--no-install-recommends" in apt and "rm -rf /var/lib/apt/lists/*" in apt
    assert args_of(ins, "USER") == ["10001:10001"]
    assert "--uid 10001" in build and "--gid 10001" in build
    assert args_of(ins, "HEALTHCHECK") and "CMD [" in args_of(ins, "HEALTHCHECK")[0]
    assert json.loads(args_of(ins, "ENTRYPOINT")[0]) == ["reelay"]
    assert args_of(ins, "EXPOSE") == ["8080"]


def test_processor_runs_serve_with_ffmpeg_and_writes_only_data() -> None:
    ins = instructions("processor.Dockerfile")
    assert json.loads(args_of(ins, "CMD")[0]) == ["serve"]
    apt = [r for r in args_of(ins, "RUN") if "apt-get install" in r][0]
    assert "ffmpeg" in apt.split() and "curl" in apt.split()
    env = " ".join(args_of(ins, "ENV"))
    assert "REELAY_DATA_DIR=/data" in env and "REELAY_LISTEN=0.0.0.0:8080" in env
    assert "install -d -o 10001 -g 10001" in " ".join(args_of(ins, "RUN"))


def test_edge_runs_reelay_edge_with_debian_nginx() -> None:
    ins = instructions("edge.Dockerfile")
    assert json.loads(args_of(ins, "CMD")[0]) == ["edge", "--config", "/etc/reelay/edge.toml"]
    apt = [r for r in args_of(ins, "RUN") if "apt-get install" in r][0]
    assert "nginx" in apt.split()


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    assert {"!Cargo.toml", "!Cargo.lock", "!crates/"} <= set(lines)
    assert "**/target" in lines and "**/.env" in lines
