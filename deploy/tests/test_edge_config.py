"""The edge configuration (edge.toml) of both overlays and of docker-compose.yml.

The real check is `reelay edge --config FILE --check-config`. When the reelay binary at hand has
no `edge` subcommand yet, the same rules are checked here on the TOML (tomllib), following
crates/edge/src/config.rs: fields, http://host:port cluster URLs, names, weights, costs.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import pathlib
import re
import subprocess
import tomllib
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from conftest import ROOT, Manifests, variables_of

CLUSTER_NAME = re.compile(r"^[a-z0-9-]{1,32}$")
REQUIRED = {"listen", "control_listen", "clusters"}
KNOWN = REQUIRED | {
    "nginx", "work_dir", "client_max_body_size", "reload_min_interval_ms", "local_cluster", "mode",
    "hosts_file", "nginx_user", "nginx_worker_processes", "nginx_http_snippet", "health", "placement",
    "status_allow", "client_keepalive", "tls_cert", "tls_key", "upstream_client_cert",
    "upstream_client_key", "upstream_ca", "upstream_server_name", "rate_limit_per_second",
    "rate_limit_burst", "http_redirect_listen", "auth", "stealing",
}
HEALTH = {"interval_ms", "timeout_ms", "fall", "rise", "resolve_interval_ms"}
STEALING_AT_LEAST_0 = {"min_seconds_saved", "egress_usd_per_gb", "cooldown_seconds", "min_wait_seconds"}
STEALING_POSITIVE = {"link_mb_per_second", "wait_usd_per_hour"}


@functools.cache
def reelay_edge() -> str | None:
    """The reelay binary if it has the `edge` subcommand, else None."""
    binary = os.environ.get("REELAY_BIN") or str(ROOT / "target" / "debug" / "reelay")
    if not pathlib.Path(binary).is_file():
        return None
    probe = subprocess.run([binary, "edge", "--help"], capture_output=True, text=True, timeout=30)
    return binary if probe.returncode == 0 and "--check-config" in probe.stdout else None


def check_with_python(cfg: dict[str, Any]) -> None:
    """The rules of crates/edge/src/config.rs (EdgeConfig::validate), on the parsed TOML."""
    assert REQUIRED <= cfg.keys(), f"missing {REQUIRED - cfg.keys()}"
    assert cfg.keys() <= KNOWN, f"unknown fields {cfg.keys() - KNOWN}"
    assert cfg["listen"] != cfg["control_listen"]
    for field in ("listen", "control_listen"):
        host, _, port = cfg[field].rpartition(":")
        assert host and 0 < int(port) < 65536, field
    assert cfg["control_listen"].startswith("127.0.0.1:"), "the controller stays on loopback"
    assert re.fullmatch(r"\d+[kKmMgG]?", cfg.get("client_max_body_size", "1m"))
    assert cfg.get("work_dir", "/tmp/reelay-edge").startswith("/tmp/"), "the only writable path is /tmp"
    health = cfg.get("health", {})
    assert health.keys() <= HEALTH
    for k in ("interval_ms", "timeout_ms", "resolve_interval_ms", "fall", "rise"):
        assert health.get(k, 1) > 0, k
    schemes = {urlsplit(c["url"]).scheme for c in cfg["clusters"]}
    assert len(schemes) == 1, "one scheme for every cluster (nginx upstreams span clusters)"
    if schemes == {"https"}:
        assert cfg.get("upstream_server_name") and cfg.get("upstream_ca"), "https needs a name and CA"
    if "auth" in cfg:
        assert cfg["auth"].keys() <= {"trusted_keys", "legacy_tokens", "revocation_sync_ms"}
        assert cfg["auth"]["trusted_keys"]
    names = [c["name"] for c in cfg["clusters"]]
    assert names and len(names) == len(set(names))
    stealing = cfg.get("stealing", {})
    assert stealing.keys() <= {"enabled", "egress"} | STEALING_AT_LEAST_0 | STEALING_POSITIVE
    assert isinstance(stealing.get("enabled", False), bool)
    for k in STEALING_AT_LEAST_0 & stealing.keys():
        assert 0 <= stealing[k] < float("inf"), f"stealing.{k}"
    for k in STEALING_POSITIVE & stealing.keys():
        assert 0 < stealing[k] < float("inf"), f"stealing.{k}"
    for e in stealing.get("egress", []):
        assert e.keys() == {"from", "to", "usd_per_gb"} and e["usd_per_gb"] >= 0
    for c in cfg["clusters"]:
        assert c.keys() <= {"name", "url", "weight", "cost", "addresses"}
        assert CLUSTER_NAME.match(c["name"])
        url = urlsplit(c["url"])
        # http(s)://host:port with an explicit port and nothing after it.
        assert url.scheme in ("http", "https"), f"{c['url']}: http:// or https:// cluster URLs"
        assert url.hostname and url.port, f"{c['url']}: http(s)://host:port"
        assert url.path in ("", "/") and not url.query and not url.fragment and not url.username
        assert 1 <= c.get("weight", 1) <= 1000
        assert c.get("cost", 1.0) > 0
    if "local_cluster" in cfg:
        assert cfg["local_cluster"] in names
    for a in cfg.get("status_allow", []):
        # An address or address/prefix-length (what config.rs accepts; no netmasks, no scopes).
        assert re.fullmatch(r"[0-9A-Fa-f:.]+(/[0-9]{1,3})?", a), a
        ipaddress.ip_network(a, strict=False)


def with_local_tls(text: str, tmp_path: pathlib.Path) -> str:
    """The overlays name certificate files mounted from Secrets in the pod; `nginx -t` opens
    them, so for the check they are replaced by a throwaway self-signed pair made here."""
    crt, key = tmp_path / "test.crt", tmp_path / "test.key"
    if not crt.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=reelay-deploy-test",
                        "-days", "1", "-keyout", str(key), "-out", str(crt)],
                       check=True, capture_output=True, timeout=60)
    for field in ("tls_cert", "upstream_client_cert", "upstream_ca"):
        text = re.sub(rf'^{field} = ".*"$', f'{field} = "{crt}"', text, flags=re.M)
    for field in ("tls_key", "upstream_client_key"):
        text = re.sub(rf'^{field} = ".*"$', f'{field} = "{key}"', text, flags=re.M)
    return text


def check_with_reelay(binary: str, text: str, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(with_local_tls(text, tmp_path))
    r = subprocess.run([binary, "edge", "--config", str(path), "--check-config"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"reelay edge --check-config refused it:\n{r.stdout}\n{r.stderr}"


def edge_toml(m: Manifests) -> str:
    return m.get_prefixed("ConfigMap", "reelay-edge-config-")["data"]["edge.toml"]


def test_overlay_edge_config_is_valid(manifests: Manifests, tmp_path: pathlib.Path) -> None:
    text = edge_toml(manifests)
    binary = reelay_edge()
    if binary:
        check_with_reelay(binary, text, tmp_path)
    check_with_python(tomllib.loads(text))


def test_compose_edge_config_is_valid(tmp_path: pathlib.Path) -> None:
    text = (ROOT / "docker" / "compose" / "edge.toml").read_text()
    binary = reelay_edge()
    if binary:
        check_with_reelay(binary, text, tmp_path)
    cfg = tomllib.loads(text)
    check_with_python(cfg)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for c in cfg["clusters"]:
        host = urlsplit(c["url"]).hostname
        assert host in compose["services"], f"{host} is a compose service"
        env = compose["services"][host]["environment"]
        assert env["REELAY_CLUSTER"] == c["name"]


def test_reelay_edge_check_config_is_used_when_available() -> None:
    """Reports which check ran (shows as a skip when only the Python rules could be used)."""
    if reelay_edge() is None:
        pytest.skip("this reelay binary has no `edge --check-config` yet: edge.toml was checked "
                    "with the Python rules only (build `cargo build -p reelay` to use the real check)")


def test_overlay_edge_status_stays_in_cluster(manifests: Manifests, tf_root: dict[str, Any]) -> None:
    """Cluster addresses and load are not for the internet: status_allow is set and private,
    and it covers the pod addresses Prometheus scrapes /edge/metrics from (terraform defaults)."""
    allow = tomllib.loads(edge_toml(manifests)).get("status_allow")
    assert allow, "status_allow missing"
    nets = [ipaddress.ip_network(a, strict=False) for a in allow]
    for net in nets:
        assert net.is_private or net.is_loopback, f"{net} is public"
    pods = {"aws": "aws_vpc_cidr", "gcp": "gcp_pods_cidr"}[manifests.overlay]
    pod_range = ipaddress.ip_network(variables_of(tf_root)[pods]["default"])
    assert any(pod_range.subnet_of(n) for n in nets if n.version == pod_range.version), (
        f"status_allow {allow} does not cover the pod range {pod_range} ({pods})")


def test_overlay_edge_lists_local_cluster_and_the_remote_cloud(manifests: Manifests) -> None:
    cfg = tomllib.loads(edge_toml(manifests))
    local, remote = manifests.overlay, {"aws": "gcp", "gcp": "aws"}[manifests.overlay]
    assert cfg["local_cluster"] == local
    assert sorted(c["name"] for c in cfg["clusters"]) == sorted([local, remote])
    by_name = {c["name"]: c for c in cfg["clusters"]}

    # The local cluster: an in-cluster Service of this overlay that selects the API pods.
    url = urlsplit(by_name[local]["url"])
    svc_name, ns, *rest = url.hostname.split(".")
    assert rest == ["svc", "cluster", "local"] and ns == "reelay"
    svc = manifests.get("Service", svc_name)
    assert url.port in {p["port"] for p in svc["spec"]["ports"]}
    api = manifests.get("Deployment", "reelay-api")["spec"]["template"]["metadata"]["labels"]
    assert all(api.get(k) == v for k, v in svc["spec"]["selector"].items())

    # The remote cloud: a public name, never an in-cluster one.
    assert not urlsplit(by_name[remote]["url"]).hostname.endswith(".cluster.local")

    # The edge container listens where edge.toml says nginx listens.
    edge = manifests.get("Deployment", "reelay-edge")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["containerPort"] for p in edge["ports"]}
    for field in ("listen", "http_redirect_listen"):
        if field in cfg:
            assert int(cfg[field].rpartition(":")[2]) in ports, field


def crosses_clouds(url: str) -> bool:
    """A cluster URL that leaves this cloud: anything but an in-cluster Service name."""
    host = urlsplit(url).hostname or ""
    return not host.endswith(".svc.cluster.local")


def mounted_files(m: Manifests) -> set[str]:
    """Directories the edge container mounts, for checking that edge.toml's paths exist."""
    edge = m.get("Deployment", "reelay-edge")["spec"]["template"]["spec"]["containers"][0]
    return {v["mountPath"] for v in edge["volumeMounts"]}


def test_no_upstream_that_crosses_clouds_is_plain_http(manifests: Manifests, tmp_path: pathlib.Path) -> None:
    """Issue 12, finding 3: bearer tokens and uploads must not cross the internet in clear.
    Every cluster reached across clouds is https:// with mutual TLS (the edge's client
    certificate), and the rendered nginx.conf proxies nothing to a cluster over http://."""
    text = edge_toml(manifests)
    cfg = tomllib.loads(text)
    remote = [c for c in cfg["clusters"] if crosses_clouds(c["url"])]
    assert remote, "the other cloud's cluster is listed"
    for c in remote:
        assert urlsplit(c["url"]).scheme == "https", f"{c['name']}: {c['url']} crosses clouds in clear"
    for field in ("upstream_client_cert", "upstream_client_key", "upstream_ca", "upstream_server_name"):
        assert cfg.get(field), f"{field}: mutual TLS towards the clusters"
    mounts = mounted_files(manifests)
    for field in ("upstream_client_cert", "upstream_client_key", "upstream_ca", "tls_cert", "tls_key"):
        assert any(cfg[field].startswith(m + "/") for m in mounts), f"{field} {cfg[field]} is not mounted"
    binary = reelay_edge()
    if binary:
        path = tmp_path / "edge.toml"
        path.write_text(with_local_tls(text, tmp_path))
        r = subprocess.run([binary, "edge", "--config", str(path), "--check-config", "--print-nginx-conf"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        plain = [l.strip() for l in r.stdout.splitlines()
                 if l.strip().startswith("proxy_pass http://") and "reelay_controller" not in l]
        assert not plain, f"rendered upstreams over plain http: {plain}"
        assert "proxy_ssl_certificate " in r.stdout and "proxy_ssl_verify on;" in r.stdout


def test_public_edge_is_https_and_http_only_redirects(manifests: Manifests) -> None:
    """The public listener is TLS (a cert-manager certificate mounted where edge.toml reads it);
    the Service's port 80 goes to the listener that only redirects to HTTPS."""
    cfg = tomllib.loads(edge_toml(manifests))
    assert cfg.get("tls_cert") and cfg.get("tls_key"), "the public listener is HTTPS"
    assert cfg.get("http_redirect_listen"), "plain HTTP redirects to HTTPS"
    assert "auth" in cfg, "the public edge checks tokens ([auth])"
    edge = manifests.get("Deployment", "reelay-edge")["spec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in edge["containers"][0]["ports"]}
    assert ports["https"] == int(cfg["listen"].rpartition(":")[2])
    assert ports["http"] == int(cfg["http_redirect_listen"].rpartition(":")[2])
    svc = manifests.get("Service", "reelay-edge")
    by_port = {p["port"]: p["targetPort"] for p in svc["spec"]["ports"]}
    assert by_port == {443: "https", 80: "http"}, by_port
    certs = {c["metadata"]["name"]: c for c in manifests.of_kind("Certificate")}
    volumes = {v["name"]: v for v in edge["volumes"]}
    secrets = {v["secret"]["secretName"] for v in volumes.values() if "secret" in v}
    for name in ("reelay-edge-tls", "reelay-mesh-edge"):
        assert name in certs and certs[name]["spec"]["secretName"] in secrets, name
    assert certs["reelay-mesh-api"]["spec"]["dnsNames"] == [cfg["upstream_server_name"]]
    # The edge gets the trusted keys only, never the issuer key.
    identity = [v for v in volumes.values() if v.get("secret", {}).get("secretName") == "reelay-identity"]
    assert identity and [i["key"] for i in identity[0]["secret"]["items"]] == ["trusted.keys"]
