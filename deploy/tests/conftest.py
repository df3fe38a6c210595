"""Shared fixtures for the deployment tests (run by scripts/validate-deploy.sh).

The rendered manifests come from $RENDERED_DIR (the script renders both overlays there); run
directly (`pytest deploy/tests`), the tests render them with `kubectl kustomize` themselves.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from typing import Any

import hcl2
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
OVERLAYS = ("aws", "gcp")


def _render(overlay: str) -> str:
    rendered_dir = os.environ.get("RENDERED_DIR")
    if rendered_dir:
        return (pathlib.Path(rendered_dir) / f"{overlay}.yaml").read_text()
    return subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


class Manifests:
    """The objects of one rendered overlay, with lookups by kind and name."""

    def __init__(self, overlay: str, docs: list[dict[str, Any]]):
        self.overlay = overlay
        self.docs = docs

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def get_prefixed(self, kind: str, prefix: str) -> dict[str, Any]:
        """A generated object (ConfigMap) whose name carries kustomize's hash suffix."""
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"].startswith(prefix)]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}/{prefix}*, found {len(found)}"
        return found[0]


@pytest.fixture(scope="session", params=OVERLAYS)
def manifests(request: pytest.FixtureRequest) -> Manifests:
    docs = [d for d in yaml.safe_load_all(_render(request.param)) if d]
    return Manifests(request.param, docs)


@pytest.fixture(scope="session")
def all_manifests() -> dict[str, Manifests]:
    return {o: Manifests(o, [d for d in yaml.safe_load_all(_render(o)) if d]) for o in OVERLAYS}


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps HCL's quotes and block markers: strip them for plain comparisons."""
    if isinstance(value, dict):
        return {
            _unquote(k): _unquote(v)
            for k, v in value.items()
            if k not in ("__is_block__", "__comments__", "__inline_comments__")
        }
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load_tf(path: pathlib.Path) -> dict[str, Any]:
    with path.open() as fh:
        return _unquote(hcl2.load(fh))


def load_tf_dir(directory: pathlib.Path) -> dict[str, Any]:
    """Every top-level block type of a module, merged over its .tf files."""
    merged: dict[str, Any] = {}
    for f in sorted(directory.glob("*.tf")):
        for block_type, blocks in load_tf(f).items():
            merged.setdefault(block_type, []).extend(blocks)
    return merged


def resources(module: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for block in module.get("resource", []):
        for t, named in block.items():
            if t == rtype:
                out.update(named)
    return out


def locals_of(module: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for block in module.get("locals", []):
        out.update(block)
    return out


def variables_of(module: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for block in module.get("variable", []):
        out.update(block)
    return out


@pytest.fixture(scope="session")
def tf_root() -> dict[str, Any]:
    return load_tf_dir(ROOT / "terraform")


@pytest.fixture(scope="session")
def tf_aws() -> dict[str, Any]:
    return load_tf_dir(ROOT / "terraform" / "modules" / "aws-eks")


@pytest.fixture(scope="session")
def tf_gcp() -> dict[str, Any]:
    return load_tf_dir(ROOT / "terraform" / "modules" / "gcp-gke")
