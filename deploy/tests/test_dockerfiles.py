"""The images: docker/processor.Dockerfile and docker/edge.Dockerfile."""

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


@pytest.mark.parametrize("name", ["processor.Dockerfile", "edge.Dockerfile"])
def test_multi_stage_pinned_non_root_exec_form(name: str) -> None:
    ins = instructions(name)
    froms = args_of(ins, "FROM")
    assert re.fullmatch(r"rust:\d+\.\d+\.\d+-bookworm AS builder", froms[0])
    assert froms[-1] == "debian:bookworm-slim AS runtime"
    assert all(":latest" not in f for f in froms)
    build = " ".join(args_of(ins, "RUN"))
    assert "--mount=type=cache" in build and "cargo build --release --locked -p reelay" in build
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
