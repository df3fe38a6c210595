"""terraform/: what the root and the two modules model (parsed with python-hcl2)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from conftest import ROOT, load_tf, locals_of, resources, variables_of


def block(res: dict[str, Any], name: str) -> dict[str, Any]:
    """A nested block, written plainly or as `dynamic "name" { content { ... } }`."""
    if name in res:
        return res[name][0]
    for d in res.get("dynamic", []):
        if name in d:
            return d[name]["content"][0]
    raise KeyError(name)


def test_versions_are_pinned(tf_root: dict[str, Any]) -> None:
    tf = tf_root["terraform"][0]
    assert re.match(r">= ?1\.\d+", tf["required_version"])
    providers = tf["required_providers"][0]
    for p in ("aws", "google", "google-beta", "random"):
        assert re.match(r"~> ?\d+\.\d+", providers[p]["version"]), p
    for module in ("aws-eks", "gcp-gke"):
        mod = load_tf(ROOT / "terraform" / "modules" / module / "versions.tf")["terraform"][0]
        assert mod["required_version"] == tf["required_version"]
        for name, spec in mod["required_providers"][0].items():
            assert spec["version"] == providers[name]["version"], f"{module}: {name}"


def test_root_calls_both_modules(tf_root: dict[str, Any]) -> None:
    modules = {k: v for block in tf_root["module"] for k, v in block.items()}
    assert modules["aws"]["source"] == "./modules/aws-eks"
    assert modules["gcp"]["source"] == "./modules/gcp-gke"
    outputs = {k for block in tf_root["output"] for k in block}
    assert {"aws_kubeconfig_command", "gcp_kubeconfig_command", "aws_nat_ips", "gcp_nat_ips"} <= outputs


def test_aws_eks_models_the_cluster(tf_aws: dict[str, Any]) -> None:
    cluster = resources(tf_aws, "aws_eks_cluster")["this"]
    assert set(cluster["enabled_cluster_log_types"]) == {"api", "audit", "authenticator", "controllerManager", "scheduler"}
    vpc = cluster["vpc_config"][0]
    assert vpc["endpoint_private_access"] is True and vpc["public_access_cidrs"] == "${var.api_allowed_cidrs}"
    assert cluster["encryption_config"][0]["resources"] == ["secrets"]
    assert cluster["access_config"][0]["authentication_mode"] == "API"
    assert resources(tf_aws, "aws_eks_access_policy_association"), "RBAC through access entries"
    addons = {a["addon_name"] for a in resources(tf_aws, "aws_eks_addon").values()}
    assert {"metrics-server", "amazon-cloudwatch-observability", "eks-pod-identity-agent", "vpc-cni"} <= addons
    assert resources(tf_aws, "aws_nat_gateway") and resources(tf_aws, "aws_flow_log")
    assert resources(tf_aws, "aws_launch_template")["node"]["metadata_options"][0]["http_tokens"] == "required"


def test_node_pools_match_the_processor_scheduling(tf_aws: dict[str, Any], tf_gcp: dict[str, Any]) -> None:
    for module in (tf_aws, tf_gcp):
        loc = locals_of(module)
        assert loc["capacity_label"] == "reelay.dev/capacity"  # k8s/base/processor.yaml
        pools = loc["node_pools"]
        assert set(pools) == {"on-demand", "spot"}
        assert pools["spot"]["taint"] is True and pools["spot"]["label"] == "spot"
        assert pools["on-demand"]["taint"] is False
    assert locals_of(tf_aws)["node_pools"]["spot"]["capacity_type"] == "SPOT"
    assert locals_of(tf_gcp)["node_pools"]["spot"]["spot"] is True
    ng = resources(tf_aws, "aws_eks_node_group")["this"]
    assert block(ng, "taint")["effect"] == "NO_SCHEDULE" and "scaling_config" in ng
    np = resources(tf_gcp, "google_container_node_pool")["this"]
    assert block(np["node_config"][0], "taint")["effect"] == "NO_SCHEDULE" and "autoscaling" in np
    assert np["node_config"][0]["workload_metadata_config"][0]["mode"] == "GKE_METADATA"


def test_aws_data_stores(tf_aws: dict[str, Any]) -> None:
    db = resources(tf_aws, "aws_db_instance")["this"]
    assert db["engine"] == "postgres" and db["storage_encrypted"] is True
    assert db["publicly_accessible"] is False and db["backup_retention_period"] >= 7
    assert db["deletion_protection"] == "${var.deletion_protection}"
    assert variables_of(tf_aws)["deletion_protection"]["default"] is True
    assert resources(tf_aws, "aws_s3_bucket_public_access_block")["media"]["block_public_acls"] is True
    assert resources(tf_aws, "aws_s3_bucket_versioning")["media"]["versioning_configuration"][0]["status"] == "Enabled"
    sse = resources(tf_aws, "aws_s3_bucket_server_side_encryption_configuration")["media"]
    assert sse["rule"][0]["apply_server_side_encryption_by_default"][0]["sse_algorithm"] == "aws:kms"
    assert resources(tf_aws, "aws_s3_bucket_lifecycle_configuration")["media"]["rule"]
    assoc = resources(tf_aws, "aws_eks_pod_identity_association")["workload"]
    assert assoc["namespace"] == "${var.namespace}"


def test_gcp_models_the_cluster_and_data_stores(tf_gcp: dict[str, Any]) -> None:
    gke = resources(tf_gcp, "google_container_cluster")["this"]
    assert gke["private_cluster_config"][0]["enable_private_nodes"] is True
    assert "master_authorized_networks_config" in gke
    assert gke["database_encryption"][0]["state"] == "ENCRYPTED"
    assert gke["monitoring_config"][0]["managed_prometheus"][0]["enabled"] is True
    assert gke["workload_identity_config"][0]["workload_pool"] == "${var.project_id}.svc.id.goog"
    assert gke["datapath_provider"] == "ADVANCED_DATAPATH"
    assert block(gke, "authenticator_groups_config")["security_group"]
    sql = resources(tf_gcp, "google_sql_database_instance")["this"]
    assert sql["database_version"] == "POSTGRES_16"
    settings = sql["settings"][0]
    assert settings["ip_configuration"][0]["ipv4_enabled"] is False
    assert settings["backup_configuration"][0]["enabled"] is True
    bucket = resources(tf_gcp, "google_storage_bucket")["media"]
    assert bucket["public_access_prevention"] == "enforced" and bucket["versioning"][0]["enabled"] is True
    assert bucket["lifecycle_rule"]
    assert resources(tf_gcp, "google_service_account_iam_member")["workload_identity"]["role"] == "roles/iam.workloadIdentityUser"
    assert resources(tf_gcp, "google_compute_router_nat")


def test_workload_identity_names_match_the_manifests(tf_aws: dict[str, Any], tf_gcp: dict[str, Any], all_manifests) -> None:
    for module in (tf_aws, tf_gcp):
        v = variables_of(module)
        assert v["namespace"]["default"] == "reelay"
        assert sorted(v["workload_service_accounts"]["default"]) == ["reelay-api", "video-processor"]
    gcp = all_manifests["gcp"]
    email = gcp.get("ServiceAccount", "video-processor")["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    root_name = variables_of(load_tf(ROOT / "terraform" / "variables.tf"))["name"]["default"]
    assert email.startswith(f"{root_name}-workload@")  # google_service_account.workload


def test_network_ranges_match_the_overlays(all_manifests) -> None:
    v = variables_of(load_tf(ROOT / "terraform" / "variables.tf"))
    expected = {"aws": v["aws_vpc_cidr"]["default"], "gcp": v["gcp_private_services_cidr"]["default"]}
    for overlay, cidr in expected.items():
        policy = all_manifests[overlay].get("NetworkPolicy", "allow-database-egress")
        assert policy["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"] == cidr
        ipaddress.ip_network(cidr)


def test_tfvars_example_parses_and_has_no_secrets() -> None:
    example = load_tf(ROOT / "terraform" / "terraform.tfvars.example")
    assert "api_allowed_cidrs" in example
    assert not any("password" in k or "secret" in k for k in example)
