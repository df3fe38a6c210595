# reelay on AWS: a VPC, an EKS cluster with an on-demand and a spot node group, the job store
# (RDS PostgreSQL), the media bucket (S3), container registries, and the identities that
# connect them. Plain provider resources, modelled on terraform-aws-modules/vpc and /eks.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  azs        = var.availability_zones

  # /20 private subnets for nodes and pods (VPC CNI gives pods VPC addresses), /24 public ones
  # for the NAT gateways and the internet-facing load balancers.
  private_subnets = [for i, _ in local.azs : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnets  = [for i, _ in local.azs : cidrsubnet(var.vpc_cidr, 8, 240 + i)]
  nat_count       = var.single_nat_gateway ? 1 : length(local.azs)

  # The label and taint the video-processor Deployment tolerates and prefers
  # (k8s/base/processor.yaml); the API and the edge stay on on-demand nodes.
  capacity_label = "reelay.dev/capacity"
  node_pools = {
    on-demand = {
      capacity_type  = "ON_DEMAND"
      instance_types = var.on_demand_instance_types
      scaling        = var.on_demand_scaling
      disk_gib       = var.node_disk_gib.on_demand
      label          = "on-demand"
      taint          = false
    }
    spot = {
      capacity_type  = "SPOT"
      instance_types = var.spot_instance_types
      scaling        = var.spot_scaling
      disk_gib       = var.node_disk_gib.spot
      label          = "spot"
      taint          = true
    }
  }

  tags = merge(var.tags, { "reelay/cluster" = var.name })
}
