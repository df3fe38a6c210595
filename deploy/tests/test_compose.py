"""docker-compose.yml: the two-cloud topology of `reelay up` in containers."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest
import yaml

from conftest import ROOT

RAW = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(RAW)
SERVICES: dict[str, Any] = COMPOSE["services"]
REELAY = [s for s, v in SERVICES.items() if v.get("image", "").startswith(("reelay-processor", "reelay-edge"))]


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_each_cluster_has_api_worker_postgres_and_s3(cloud: str) -> None:
    for role in ("api", "worker", "postgres", "s3", "migrate"):
        assert f"{role}-{cloud}" in SERVICES
    assert SERVICES[f"api-{cloud}"]["command"] == ["api"]
    assert SERVICES[f"worker-{cloud}"]["command"] == ["worker"]
    assert SERVICES[f"migrate-{cloud}"]["command"] == ["migrate"]
    # Overridable (scripts/base-images.sh builds a stand-in where no registry answers).
    assert re.fullmatch(r"\$\{POSTGRES_IMAGE:-postgres:15(\.\d+)?-bookworm\}", SERVICES[f"postgres-{cloud}"]["image"])
    env = SERVICES[f"api-{cloud}"]["environment"]
    assert env["REELAY_CLUSTER"] == cloud
    assert env["REELAY_DATABASE_URL"].startswith(f"postgres://reelay:${{{cloud.upper()}_DB_PASSWORD}}@postgres-{cloud}:5432/")
    assert env["REELAY_STORAGE"].startswith("s3://")
    assert env["AWS_ENDPOINT"] == f"http://s3-{cloud}:9000"
    assert SERVICES[f"worker-{cloud}"]["environment"] == env, "api and worker share one cluster config"


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_each_cloud_on_its_own_network_reached_only_through_its_ingress(cloud: str) -> None:
    other = "gcp" if cloud == "aws" else "aws"
    for role in ("postgres", "s3", "migrate"):
        assert SERVICES[f"{role}-{cloud}"]["networks"] == [cloud], role
    # The worker joins the ingress only to reach the edge (work stealing).
    for role in ("api", "worker"):
        assert SERVICES[f"{role}-{cloud}"]["networks"] == [cloud, f"{cloud}-ingress"], role
    for name, svc in SERVICES.items():
        if name != "edge" and not name.endswith(f"-{cloud}"):
            nets = svc.get("networks", [])
            assert cloud not in nets and f"{cloud}-ingress" not in nets, name
    assert other not in SERVICES["edge"]["networks"] and cloud not in SERVICES["edge"]["networks"]
    assert f"{cloud}-ingress" in SERVICES["edge"]["networks"]


def test_one_identity_the_edge_holds_public_keys_only() -> None:
    """Both clouds verify tokens signed by one issuer key; the edge mounts only trusted.keys."""
    for cloud in ("aws", "gcp"):
        for role in ("api", "worker", "migrate"):
            svc = SERVICES[f"{role}-{cloud}"]
            assert svc["environment"]["REELAY_TRUSTED_KEYS"] == "/identity/trusted.keys"
            assert "identity-issuer:/identity:ro" in svc["volumes"]
    edge = SERVICES["edge"]
    assert "identity-trusted:/identity:ro" in edge["volumes"]
    assert not any(v.startswith("identity-issuer") for v in edge["volumes"])
    assert SERVICES["identity-keys"]["network_mode"] == "none"
    assert "[auth]" in (ROOT / "docker/compose/edge.toml").read_text()


def test_one_webhook_notify_key_for_both_clouds() -> None:
    """An owner's webhook secret derives from the notify key: every cluster process reads the
    same file (made once by identity-keys, on the volume both clouds mount), not a key each
    generates in its own data volume."""
    for cloud in ("aws", "gcp"):
        for role in ("api", "worker"):
            svc = SERVICES[f"{role}-{cloud}"]
            assert svc["environment"]["REELAY_WEBHOOK_NOTIFY_KEY_FILE"] == "/identity/webhook-notify.key"
            assert "identity-issuer:/identity:ro" in svc["volumes"]
    made = SERVICES["identity-keys"]["command"][0]
    assert "/data/webhook-notify.key" in made and "whsec_" in made
    assert "identity-issuer:/data" in SERVICES["identity-keys"]["volumes"]


def test_edge_in_front_on_8080() -> None:
    edge = SERVICES["edge"]
    assert edge["build"]["dockerfile"] == "docker/edge.Dockerfile"
    assert any(str(p).endswith(":8080") for p in edge["ports"])
    assert "${EDGE_CONFIG:-./docker/compose/edge.toml}:/etc/reelay/edge.toml:ro" in edge["volumes"]


def test_health_checks_and_ordering() -> None:
    for name, svc in SERVICES.items():
        if name.startswith(("migrate-", "identity-")):
            assert svc["restart"] == "no"  # one-shot
            continue
        assert "healthcheck" in svc, f"{name}: healthcheck"
        assert svc["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    for cloud in ("aws", "gcp"):
        for role in ("api", "worker"):
            deps = SERVICES[f"{role}-{cloud}"]["depends_on"]
            assert deps[f"postgres-{cloud}"]["condition"] == "service_healthy"
            assert deps[f"s3-{cloud}"]["condition"] == "service_healthy"
            assert deps[f"migrate-{cloud}"]["condition"] == "service_completed_successfully"
            assert "/readyz" in " ".join(SERVICES[f"{role}-{cloud}"]["healthcheck"]["test"])
    edge_deps = SERVICES["edge"]["depends_on"]
    for cloud in ("aws", "gcp"):
        assert edge_deps[f"api-{cloud}"]["condition"] == "service_healthy"


def test_reelay_containers_are_hardened_and_use_named_volumes() -> None:
    assert set(REELAY) >= {"api-aws", "worker-aws", "api-gcp", "worker-gcp", "edge"}
    named = set(COMPOSE["volumes"])
    for name in REELAY:
        svc = SERVICES[name]
        assert svc["read_only"] is True, name
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
        assert any(t.startswith("/tmp") for t in svc["tmpfs"]), name
        for v in svc.get("volumes", []):
            source = re.sub(r"^\$\{[A-Z_]+:-([^}]*)\}", r"\1", v).split(":")[0]
            assert source in named or source.startswith("./docker/compose/"), f"{name}: {v}"
    for name, svc in SERVICES.items():
        if name.startswith("postgres-"):
            assert svc["volumes"][0].split(":")[0] in named


def test_no_secret_literal_in_the_file() -> None:
    secretish = re.compile(r"^\s*([A-Z_]*(PASSWORD|SECRET|ACCESS_KEY)[A-Z_]*):\s*(.+)$")
    for line in RAW.splitlines():
        m = secretish.match(line)
        if m:
            assert m.group(3).startswith("${"), f"secret from the environment only: {line.strip()}"
    example = (ROOT / ".env.example").read_text()
    for var in sorted(set(re.findall(r"\$\{([A-Z0-9_]+)", RAW))):
        assert re.search(rf"^#?\s*{var}=", example, re.M), f"{var} is documented in .env.example"


@pytest.mark.parametrize("cloud", ["aws", "gcp"])
def test_each_cloud_steals_from_the_other_through_the_edge_with_its_own_peer_token(cloud: str) -> None:
    """Each cloud's api and worker read docker/compose/steal-{cloud}.toml: the edge decides, the
    other cloud is the one peer (through the edge's /clusters/{other}), with a peer token
    owned by this cloud that identity-keys mints; no presigned URL names a private bucket."""
    other = "gcp" if cloud == "aws" else "aws"
    mount = f"./docker/compose/steal-{cloud}.toml:/etc/reelay/reelay.toml:ro"
    for role in ("api", "worker", "migrate"):
        svc = SERVICES[f"{role}-{cloud}"]
        assert svc["environment"]["REELAY_CONFIG"] == "/etc/reelay/reelay.toml", role
        assert mount in svc["volumes"], role
    steal = tomllib.loads((ROOT / f"docker/compose/steal-{cloud}.toml").read_text())["steal"]
    token = f"/identity/peer-{cloud}.token"
    assert steal["edge"] == "http://edge:8080"
    assert steal["token_file"] == token
    assert steal["presign"] is False
    assert steal["peers"] == [{"name": other, "url": f"http://edge:8080/clusters/{other}", "token_file": token}]
    minting = "\n".join(SERVICES["identity-keys"]["command"])
    assert "--scope peer --owner \"$$cloud\"" in minting and "for cloud in aws gcp" in minting
    assert "/data/peer-$$cloud.token" in minting
    stealing = tomllib.loads((ROOT / "docker/compose/edge.toml").read_text())["stealing"]
    assert stealing["enabled"] is True
    # The documented conservative defaults: short clips stay where they were placed.
    assert stealing["min_seconds_saved"] >= 60 and stealing["min_wait_seconds"] >= 120
