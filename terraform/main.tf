# reelay's two clouds: one cluster per cloud (AWS EKS, GCP GKE), each with its own job store,
# media bucket and image registry. The NGINX edge in each cloud (k8s/) spreads work between
# them; global DNS points at both edges.
#
#   cp terraform.tfvars.example terraform.tfvars   # fill in
#   terraform init && terraform plan -out reelay.plan && terraform apply reelay.plan
#
# Either side can be left out with enable_aws / enable_gcp.

provider "aws" {
  region = var.aws_region
  default_tags {
    tags = var.tags
  }
}

provider "google" {
  project        = var.gcp_project_id
  region         = var.gcp_region
  default_labels = var.tags
}

provider "google-beta" {
  project        = var.gcp_project_id
  region         = var.gcp_region
  default_labels = var.tags
}

# Job store passwords: letters and digits only (they go into a postgres:// URL unescaped).
# They are in the state: see versions.tf about the backend.
resource "random_password" "db" {
  for_each = toset(["aws", "gcp"])
  length   = 40
  special  = false
}

module "aws" {
  source = "./modules/aws-eks"
  count  = var.enable_aws ? 1 : 0

  name                = var.name
  kubernetes_version  = var.aws_kubernetes_version
  availability_zones  = var.aws_availability_zones
  vpc_cidr            = var.aws_vpc_cidr
  single_nat_gateway  = var.aws_single_nat_gateway
  api_allowed_cidrs   = var.api_allowed_cidrs
  cluster_admin_arns  = var.aws_cluster_admin_arns
  deployer_arns       = var.aws_deployer_arns
  db_instance_class   = var.aws_db_instance_class
  db_password         = random_password.db["aws"].result
  deletion_protection = var.deletion_protection
  tags                = var.tags
}

module "gcp" {
  source = "./modules/gcp-gke"
  count  = var.enable_gcp ? 1 : 0

  providers = {
    google      = google
    google-beta = google-beta
  }

  name                  = var.name
  project_id            = var.gcp_project_id
  region                = var.gcp_region
  subnet_cidr           = var.gcp_subnet_cidr
  pods_cidr             = var.gcp_pods_cidr
  services_cidr         = var.gcp_services_cidr
  master_cidr           = var.gcp_master_cidr
  private_services_cidr = var.gcp_private_services_cidr
  api_allowed_cidrs     = var.api_allowed_cidrs
  rbac_security_group   = var.gcp_rbac_security_group
  cluster_admin_members = var.gcp_cluster_admin_members
  deployer_members      = var.gcp_deployer_members
  db_tier               = var.gcp_db_tier
  db_password           = random_password.db["gcp"].result
  deletion_protection   = var.deletion_protection
  labels                = var.tags
}
