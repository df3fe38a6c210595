# reelay on GCP: a VPC with Cloud NAT, a private regional GKE cluster (Dataplane V2, Workload
# Identity, Managed Service for Prometheus) with an on-demand and a spot node pool, the job
# store (Cloud SQL PostgreSQL, private IP), the media bucket (GCS), an Artifact Registry
# repository and the identities that connect them. Plain provider resources, modelled on
# terraform-google-modules/network and /kubernetes-engine (private-cluster).

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  project_number = data.google_project.this.number
  labels         = merge(var.labels, { "reelay-cluster" = var.name })

  # The label and taint the video-processor Deployment tolerates and prefers
  # (k8s/base/processor.yaml); the API and the edge stay on on-demand nodes.
  capacity_label = "reelay.dev/capacity"
  node_pools = {
    on-demand = {
      machine_type = var.on_demand_machine_type
      spot         = false
      nodes        = var.on_demand_nodes
      disk_gb      = var.node_disk_gb.on_demand
      label        = "on-demand"
      taint        = false
    }
    spot = {
      machine_type = var.spot_machine_type
      spot         = true
      nodes        = var.spot_nodes
      disk_gb      = var.node_disk_gb.spot
      label        = "spot"
      taint        = true
    }
  }

  apis = toset([
    "artifactregistry.googleapis.com",
    "cloudkms.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
    "storage.googleapis.com",
  ])
}

resource "google_project_service" "this" {
  for_each           = local.apis
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}
