variable "name" {
  description = "Name of both clusters and prefix of their resources."
  type        = string
  default     = "reelay"
}

variable "enable_aws" {
  description = "Create the AWS side (EKS, RDS, S3)."
  type        = bool
  default     = true
}

variable "enable_gcp" {
  description = "Create the GCP side (GKE, Cloud SQL, GCS)."
  type        = bool
  default     = true
}

variable "api_allowed_cidrs" {
  description = "CIDRs (operators, CI) allowed to reach both Kubernetes API endpoints. Never 0.0.0.0/0."
  type        = list(string)
}

# ---------------------------------------------------------------- AWS
variable "aws_region" {
  description = "AWS region of the aws cluster."
  type        = string
  default     = "eu-west-1"
}

variable "aws_availability_zones" {
  description = "Availability zones of the aws cluster (in aws_region)."
  type        = list(string)
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
}

variable "aws_kubernetes_version" {
  description = "EKS Kubernetes version."
  type        = string
  default     = "1.34"
}

variable "aws_vpc_cidr" {
  description = "VPC CIDR (k8s/overlays/aws allows the database in it, and its edge.toml status_allow must cover it for metrics scrapes: keep them equal)."
  type        = string
  default     = "10.20.0.0/16"
}

variable "aws_single_nat_gateway" {
  description = "One NAT gateway instead of one per zone (cheaper, less available)."
  type        = bool
  default     = false
}

variable "aws_cluster_admin_arns" {
  description = "IAM principals with cluster-admin on EKS (access entries)."
  type        = list(string)
  default     = []
}

variable "aws_deployer_arns" {
  description = "IAM principals (CI) with edit rights in the reelay namespace on EKS."
  type        = list(string)
  default     = []
}

variable "aws_db_instance_class" {
  description = "RDS instance class of the aws job store."
  type        = string
  default     = "db.t4g.medium"
}

# ---------------------------------------------------------------- GCP
variable "gcp_project_id" {
  description = "GCP project of the gcp cluster."
  type        = string
  default     = ""
}

variable "gcp_region" {
  description = "GCP region of the gcp cluster."
  type        = string
  default     = "europe-west1"
}

variable "gcp_subnet_cidr" {
  description = "Node subnet."
  type        = string
  default     = "10.40.0.0/20"
}

variable "gcp_pods_cidr" {
  description = "Pod range (k8s/overlays/gcp/edge.toml status_allow must cover it, or metrics scrapes of the edge get 403)."
  type        = string
  default     = "10.44.0.0/14"
}

variable "gcp_services_cidr" {
  description = "Service range."
  type        = string
  default     = "10.48.0.0/20"
}

variable "gcp_master_cidr" {
  description = "Private control plane range (/28)."
  type        = string
  default     = "172.16.0.0/28"
}

variable "gcp_private_services_cidr" {
  description = "Private services access range for Cloud SQL (k8s/overlays/gcp allows the database in it: keep them equal)."
  type        = string
  default     = "10.60.0.0/16"
}

variable "gcp_rbac_security_group" {
  description = "gke-security-groups@<domain> for Google Groups for RBAC (empty: off)."
  type        = string
  default     = ""
}

variable "gcp_cluster_admin_members" {
  description = "IAM members with roles/container.admin."
  type        = list(string)
  default     = []
}

variable "gcp_deployer_members" {
  description = "IAM members (CI) with roles/container.developer."
  type        = list(string)
  default     = []
}

variable "gcp_db_tier" {
  description = "Cloud SQL tier of the gcp job store."
  type        = string
  default     = "db-custom-2-7680"
}

variable "tags" {
  description = "Tags (AWS) and labels (GCP) for every resource."
  type        = map(string)
  default = {
    app        = "reelay"
    managed-by = "terraform"
  }
}

variable "deletion_protection" {
  description = "Protect the cluster, the job store and the buckets from deletion; set false (and apply) only to tear down."
  type        = bool
  default     = true
}
