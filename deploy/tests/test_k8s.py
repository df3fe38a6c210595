"""What the rendered overlays (k8s/overlays/aws, k8s/overlays/gcp) promise."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from conftest import Manifests

NAMESPACE = "reelay"
UID = 10001
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def pod_spec(dep: dict[str, Any]) -> dict[str, Any]:
    return dep["spec"]["template"]["spec"]


def all_containers(dep: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(dep)
    return spec.get("initContainers", []) + spec["containers"]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """matchLabels / matchExpressions (In, NotIn, Exists, DoesNotExist) against labels."""
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def env_value(m: Manifests, container: dict[str, Any], name: str) -> str | None:
    for e in container.get("env", []):
        if e["name"] == name:
            return e.get("value")
    for src in container.get("envFrom", []):
        ref = src.get("configMapRef")
        if ref:
            cm = m.get("ConfigMap", ref["name"])
            if name in cm.get("data", {}):
                return cm["data"][name]
    return None


# ---------------------------------------------------------------- the seed's promises


def test_processor_has_no_replicas_field_and_hpa_keeps_at_least_three(manifests: Manifests) -> None:
    dep = manifests.get("Deployment", "video-processor")
    assert "replicas" not in dep["spec"], "the HPA owns the replica count: no replicas field"
    hpas = [h for h in manifests.of_kind("HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"]["name"] == "video-processor"]
    assert len(hpas) == 1
    hpa = hpas[0]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["spec"]["minReplicas"] >= 3
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    resources = {m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"}
    assert resources == {"cpu", "memory"}
    external = [m["external"] for m in hpa["spec"]["metrics"] if m["type"] == "External"]
    assert [e["metric"]["name"] for e in external] == ["reelay_backlog_seconds"]
    # A per-slot, cluster-wide value: a proportional (Value) target, not AverageValue.
    assert external[0]["target"]["type"] == "Value"


def test_processor_runs_reelay_worker_and_api_runs_reelay_api(manifests: Manifests) -> None:
    worker = manifests.get("Deployment", "video-processor")
    assert pod_spec(worker)["containers"][0]["args"] == ["worker"]
    api = manifests.get("Deployment", "reelay-api")
    assert pod_spec(api)["containers"][0]["args"] == ["api"]
    assert api["spec"]["replicas"] >= 2
    migrate = pod_spec(api)["initContainers"]
    assert [c["args"] for c in migrate] == [["migrate"]], "migrations run before the API starts"


def test_edge_has_two_replicas_and_mounts_its_config(manifests: Manifests) -> None:
    edge = manifests.get("Deployment", "reelay-edge")
    assert edge["spec"]["replicas"] == 2
    container = pod_spec(edge)["containers"][0]
    assert container["args"] == ["edge", "--config", "/etc/reelay/edge.toml"]
    mounts = {v["name"]: v["mountPath"] for v in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(edge)["volumes"]}
    config_volume = [n for n, v in volumes.items() if "configMap" in v]
    assert len(config_volume) == 1
    assert mounts[config_volume[0]] == "/etc/reelay"
    cm_name = volumes[config_volume[0]]["configMap"]["name"]
    cm = manifests.get("ConfigMap", cm_name)  # the generated name, hash included, resolves
    assert "edge.toml" in cm["data"]
    assert container["ports"][0]["containerPort"] == 8080


def test_edge_service_is_a_load_balancer_with_cloud_annotations(manifests: Manifests) -> None:
    svc = manifests.get("Service", "reelay-edge")
    assert svc["spec"]["type"] == "LoadBalancer"
    annotations = svc["metadata"].get("annotations", {})
    if manifests.overlay == "aws":
        assert annotations.get("service.beta.kubernetes.io/aws-load-balancer-type") == "nlb"
    else:
        assert annotations.get("cloud.google.com/l4-rbs") == "enabled"
        assert "networking.gke.io/load-balancer-ip-addresses" in annotations


def test_remote_api_entry_is_restricted_to_the_other_clouds_addresses(manifests: Manifests) -> None:
    svc = manifests.get("Service", "reelay-api-remote")
    ranges = svc["spec"].get("loadBalancerSourceRanges", [])
    assert ranges, "the API is never open to the whole internet"
    for r in ranges:
        assert ipaddress.ip_network(r).prefixlen >= 24
    policy = manifests.get("NetworkPolicy", "allow-remote-edge-to-api")
    allowed = {p["ipBlock"]["cidr"] for p in policy["spec"]["ingress"][0]["from"]}
    assert allowed == set(ranges)


def test_pdbs_cover_every_deployment(manifests: Manifests) -> None:
    pdbs = manifests.of_kind("PodDisruptionBudget")
    for dep in manifests.of_kind("Deployment"):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in pdbs if selects(p["spec"]["selector"], labels)]
        assert len(matching) == 1, f"{dep['metadata']['name']}: one PodDisruptionBudget"
        spec = matching[0]["spec"]
        assert "minAvailable" in spec or "maxUnavailable" in spec


# ---------------------------------------------------------------- every pod


def test_every_pod_is_non_root_with_read_only_root_fs(manifests: Manifests) -> None:
    for dep in manifests.of_kind("Deployment"):
        name = dep["metadata"]["name"]
        spec = pod_spec(dep)
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, name
        assert psc["runAsUser"] == UID and psc["runAsGroup"] == UID, name
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        assert spec.get("hostNetwork") is not True and spec.get("hostPID") is not True, name
        for c in all_containers(dep):
            sc = c["securityContext"]
            where = f"{name}/{c['name']}"
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc.get("privileged") is not True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc.get("runAsUser", UID) == UID, where


def test_every_container_has_requests_and_limits(manifests: Manifests) -> None:
    for dep in manifests.of_kind("Deployment"):
        for c in all_containers(dep):
            where = f"{dep['metadata']['name']}/{c['name']}"
            for kind in ("requests", "limits"):
                for res in ("cpu", "memory", "ephemeral-storage"):
                    assert res in c["resources"].get(kind, {}), f"{where}: {kind}.{res}"


def test_every_long_running_container_has_three_probes(manifests: Manifests) -> None:
    for dep in manifests.of_kind("Deployment"):
        for c in pod_spec(dep)["containers"]:
            where = f"{dep['metadata']['name']}/{c['name']}"
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, f"{where}: {probe}"
                port = c[probe]["httpGet"]["port"]
                assert port in {p["name"] for p in c["ports"]} | {p["containerPort"] for p in c["ports"]}
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            if dep["metadata"]["name"] != "reelay-edge":
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_termination_grace_exceeds_reelays_shutdown_grace(manifests: Manifests) -> None:
    for dep in manifests.of_kind("Deployment"):
        tgps = pod_spec(dep)["terminationGracePeriodSeconds"]
        for c in pod_spec(dep)["containers"]:
            grace = env_value(manifests, c, "REELAY_SHUTDOWN_GRACE_SECONDS")
            if grace is not None:
                assert tgps > int(grace), f"{dep['metadata']['name']}: {tgps} <= {grace}"
    worker = manifests.get("Deployment", "video-processor")
    assert int(env_value(manifests, pod_spec(worker)["containers"][0], "REELAY_SHUTDOWN_GRACE_SECONDS")) >= 300


def test_writable_paths_are_only_data_and_tmp(manifests: Manifests) -> None:
    for dep in manifests.of_kind("Deployment"):
        volumes = {v["name"]: v for v in pod_spec(dep)["volumes"]}
        for c in all_containers(dep):
            for mount in c.get("volumeMounts", []):
                v = volumes[mount["name"]]
                if "emptyDir" in v:
                    assert mount["mountPath"] in ("/data", "/tmp"), mount
                    assert "sizeLimit" in v["emptyDir"], f"{dep['metadata']['name']}: emptyDir {v['name']} unbounded"
                else:
                    assert mount.get("readOnly") is True or "configMap" in v, mount
    worker = manifests.get("Deployment", "video-processor")
    data = [v for v in pod_spec(worker)["volumes"] if v["name"] == "data"][0]
    assert int(re.match(r"(\d+)Gi", data["emptyDir"]["sizeLimit"]).group(1)) >= 40, "scratch sized for video"


def test_processor_spreads_over_zones_and_prefers_spot(manifests: Manifests) -> None:
    spec = pod_spec(manifests.get("Deployment", "video-processor"))
    keys = {t["topologyKey"] for t in spec["topologySpreadConstraints"]}
    assert "topology.kubernetes.io/zone" in keys
    assert {"key": "reelay.dev/capacity", "operator": "Equal", "value": "spot", "effect": "NoSchedule"} in spec["tolerations"]
    pref = spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert pref["preference"]["matchExpressions"][0]["key"] == "reelay.dev/capacity"
    for name in ("reelay-api", "reelay-edge"):
        assert not pod_spec(manifests.get("Deployment", name)).get("tolerations"), f"{name} stays off spot nodes"


def test_images_are_pinned_by_tag_in_the_clouds_registry(manifests: Manifests) -> None:
    registry = {"aws": r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/", "gcp": r"^[a-z0-9-]+-docker\.pkg\.dev/"}
    for dep in manifests.of_kind("Deployment"):
        for c in all_containers(dep):
            image = c["image"]
            assert re.match(registry[manifests.overlay], image), image
            name, _, tag = image.rpartition(":")
            assert "/" in name and tag and "/" not in tag, f"{image}: no tag"
            assert tag != "latest" and re.match(r"^\d+\.\d+\.\d+", tag), f"{image}: pin a version"
            assert c["imagePullPolicy"] == "Always"


def test_everything_is_in_the_reelay_namespace(manifests: Manifests) -> None:
    for d in manifests.docs:
        if d["kind"] in CLUSTER_SCOPED:
            continue
        assert d["metadata"].get("namespace") == NAMESPACE, f"{d['kind']}/{d['metadata']['name']}"
    ns = manifests.get("Namespace", NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_no_secret_is_committed_and_the_db_secret_is_a_file(manifests: Manifests) -> None:
    assert manifests.of_kind("Secret") == [], "secrets are created out of band, never rendered"
    # The API also mounts its mutual-TLS certificate and the identity keys (files, not env).
    # The workers also mount the peer token of work stealing (optional: only with [steal]).
    expected = {"video-processor": ["reelay-db", "reelay-peer"],
                "reelay-api": ["reelay-db", "reelay-mesh-api", "reelay-identity"]}
    for name in ("video-processor", "reelay-api"):
        spec = pod_spec(manifests.get("Deployment", name))
        secret_volumes = [v for v in spec["volumes"] if "secret" in v]
        assert [v["secret"]["secretName"] for v in secret_volumes] == expected[name]
        for c in all_containers(manifests.get("Deployment", name)):
            assert env_value(manifests, c, "REELAY_CONFIG") == "/etc/reelay/secret/reelay.toml"
            assert env_value(manifests, c, "REELAY_DATABASE_URL") is None, "no database URL in the environment"
            for e in c.get("env", []):
                assert "secretKeyRef" not in e.get("valueFrom", {}), "secrets as files, not env"
    # Webhook secrets: every api replica of both clouds reads the one notify key of the identity
    # Secret, never a key each pod would generate in its own data directory.
    for c in pod_spec(manifests.get("Deployment", "reelay-api"))["containers"]:
        assert env_value(manifests, c, "REELAY_WEBHOOK_NOTIFY_KEY_FILE") == "/etc/reelay-identity/webhook-notify.key"


def test_no_rbac_because_nothing_reads_the_kubernetes_api(manifests: Manifests) -> None:
    for kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"):
        assert manifests.of_kind(kind) == []
    for sa in manifests.of_kind("ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False
    used = {pod_spec(d)["serviceAccountName"] for d in manifests.of_kind("Deployment")}
    assert used == {sa["metadata"]["name"] for sa in manifests.of_kind("ServiceAccount")}


def test_services_select_pods_and_name_their_ports(manifests: Manifests) -> None:
    deps = manifests.of_kind("Deployment")
    for svc in manifests.of_kind("Service"):
        targets = [d for d in deps if selects({"matchLabels": svc["spec"]["selector"]},
                                              d["spec"]["template"]["metadata"]["labels"])]
        assert len(targets) == 1, f"Service {svc['metadata']['name']} selects one Deployment"
        ports = {p["name"] for c in pod_spec(targets[0])["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports


# ---------------------------------------------------------------- network policy


def policies_for(m: Manifests, labels: dict[str, str], direction: str) -> list[dict[str, Any]]:
    return [p for p in m.of_kind("NetworkPolicy")
            if direction in p["spec"].get("policyTypes", []) and selects(p["spec"]["podSelector"], labels)]


def component_labels(m: Manifests, deployment: str) -> dict[str, str]:
    return m.get("Deployment", deployment)["spec"]["template"]["metadata"]["labels"]


def egress_ports_to_cidr(m: Manifests, labels: dict[str, str], cidr_contains: str) -> set[int]:
    ports: set[int] = set()
    addr = ipaddress.ip_address(cidr_contains)
    for p in policies_for(m, labels, "Egress"):
        for rule in p["spec"].get("egress", []):
            for peer in rule.get("to", []):
                block = peer.get("ipBlock")
                if not block:
                    continue
                net = ipaddress.ip_network(block["cidr"])
                excluded = any(addr in ipaddress.ip_network(e) for e in block.get("except", []))
                if addr in net and not excluded:
                    ports |= {pt["port"] for pt in rule.get("ports", [])}
    return ports


def test_default_deny_then_dns_for_everyone(manifests: Manifests) -> None:
    deny = manifests.get("NetworkPolicy", "default-deny-all")
    assert deny["spec"]["podSelector"] == {}
    assert sorted(deny["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    dns = manifests.get("NetworkPolicy", "allow-dns-egress")
    assert dns["spec"]["podSelector"] == {}
    ports = {(p["protocol"], p["port"]) for p in dns["spec"]["egress"][0]["ports"]}
    assert ports == {("UDP", 53), ("TCP", 53)}


def test_edge_to_api_path_is_open_both_ways(manifests: Manifests) -> None:
    edge, api = component_labels(manifests, "reelay-edge"), component_labels(manifests, "reelay-api")
    egress_ok = any(
        selects(peer["podSelector"], api) and 8443 in {pt["port"] for pt in rule["ports"]}
        for p in policies_for(manifests, edge, "Egress")
        for rule in p["spec"].get("egress", [])
        for peer in rule.get("to", []) if "podSelector" in peer
    )
    ingress_ok = any(
        selects(peer["podSelector"], edge) and 8443 in {pt["port"] for pt in rule["ports"]}
        for p in policies_for(manifests, api, "Ingress")
        for rule in p["spec"].get("ingress", [])
        for peer in rule.get("from", []) if "podSelector" in peer
    )
    assert egress_ok and ingress_ok


def test_processor_is_not_reachable_from_the_edge(manifests: Manifests) -> None:
    worker, edge = component_labels(manifests, "video-processor"), component_labels(manifests, "reelay-edge")
    for p in policies_for(manifests, worker, "Ingress"):
        for rule in p["spec"].get("ingress", []):
            assert rule.get("from"), f"{p['metadata']['name']}: ingress from anywhere"
            for peer in rule["from"]:
                assert "podSelector" not in peer or not selects(peer["podSelector"], edge)


def test_workers_reach_their_edge_for_the_remote_claim(manifests: Manifests) -> None:
    """Work stealing (issue 16): a worker reaches this cloud's edge on 8443 only, with a peer
    token from an optional Secret mounted read-only; the edge still cannot reach the workers."""
    worker, edge = component_labels(manifests, "video-processor"), component_labels(manifests, "reelay-edge")
    ports = {
        pt["port"]
        for p in policies_for(manifests, worker, "Egress")
        for rule in p["spec"].get("egress", [])
        for peer in rule.get("to", []) if "podSelector" in peer and selects(peer["podSelector"], edge)
        for pt in rule["ports"]
    }
    assert ports == {8443}
    spec = pod_spec(manifests.get("Deployment", "video-processor"))
    peer = next(v for v in spec["volumes"] if v.get("secret", {}).get("secretName") == "reelay-peer")
    assert peer["secret"]["optional"] is True
    mounts = [m for c in spec["containers"] for m in c["volumeMounts"] if m["name"] == peer["name"]]
    assert mounts and all(m["readOnly"] and m["mountPath"] == "/etc/reelay/peer" for m in mounts)


def test_database_object_storage_and_credentials_egress(manifests: Manifests) -> None:
    db_probe = {"aws": "10.20.3.4", "gcp": "10.60.0.5"}[manifests.overlay]
    creds = {"aws": "169.254.170.23", "gcp": "169.254.169.254"}[manifests.overlay]
    for name in ("reelay-api", "video-processor"):
        labels = component_labels(manifests, name)
        assert 5432 in egress_ports_to_cidr(manifests, labels, db_probe), f"{name} -> database"
        assert 443 in egress_ports_to_cidr(manifests, labels, "52.216.0.10"), f"{name} -> object storage"
        assert 80 in egress_ports_to_cidr(manifests, labels, creds), f"{name} -> cloud credentials"
        # The node's instance metadata (node credentials) stays closed, except GKE's metadata
        # server, which is what Workload Identity answers from.
        if manifests.overlay == "aws":
            assert not egress_ports_to_cidr(manifests, labels, "169.254.169.254"), f"{name} -> IMDS"
    edge = component_labels(manifests, "reelay-edge")
    assert not egress_ports_to_cidr(manifests, edge, db_probe), "the edge never talks to the database"


def test_metrics_scrapers_reach_every_role(manifests: Manifests) -> None:
    namespaces = {"aws": "amazon-cloudwatch", "gcp": "gmp-system"}[manifests.overlay]
    policy = manifests.get("NetworkPolicy", "allow-metrics-scraping")
    ns_sel = policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]
    assert selects(ns_sel, {"kubernetes.io/metadata.name": namespaces})
    for dep in manifests.of_kind("Deployment"):
        assert selects(policy["spec"]["podSelector"], dep["spec"]["template"]["metadata"]["labels"])


def test_gcp_has_pod_monitoring_and_workload_identity(all_manifests: dict[str, Manifests]) -> None:
    gcp, aws = all_manifests["gcp"], all_manifests["aws"]
    assert aws.of_kind("PodMonitoring") == []
    monitors = gcp.of_kind("PodMonitoring")
    assert all(pm["apiVersion"] == "monitoring.googleapis.com/v1" for pm in monitors)
    scraped: dict[str, str] = {}
    for pm in monitors:
        assert pm["metadata"]["namespace"] == NAMESPACE
        for dep in gcp.of_kind("Deployment"):
            labels = dep["spec"]["template"]["metadata"]["labels"]
            if selects(pm["spec"]["selector"], labels):
                scraped[dep["metadata"]["name"]] = pm["spec"]["endpoints"][0]["path"]
    assert scraped == {"video-processor": "/metrics", "reelay-api": "/metrics", "reelay-edge": "/edge/metrics"}
    # The alert rules group by `role` (api, processor, edge): every monitor must set it.
    for pm in monitors:
        assert {"from": "app.kubernetes.io/component", "to": "role"} in pm["spec"]["targetLabels"]["fromPod"]
    for name in ("video-processor", "reelay-api"):
        sa = gcp.get("ServiceAccount", name)
        assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
        assert "annotations" not in aws.get("ServiceAccount", name)["metadata"], "EKS Pod Identity needs none"
