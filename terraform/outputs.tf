# Everything the README's "Deploy" steps need after `terraform apply`.

output "aws_kubeconfig_command" {
  description = "Adds the EKS cluster to ~/.kube/config as context reelay-aws."
  value       = one(module.aws[*].kubeconfig_command)
}

output "aws_cluster_endpoint" {
  description = "EKS API endpoint."
  value       = one(module.aws[*].cluster_endpoint)
}

output "aws_media_bucket" {
  description = "REELAY_STORAGE of k8s/overlays/aws/reelay.env: s3://<this>/media."
  value       = one(module.aws[*].media_bucket)
}

output "aws_db_secret_arn" {
  description = "Secrets Manager secret with reelay.toml for the aws reelay-db Secret."
  value       = one(module.aws[*].db_secret_arn)
}

output "aws_vpc_cidr" {
  description = "Database range allowed by k8s/overlays/aws (allow-database-egress)."
  value       = one(module.aws[*].vpc_cidr)
}

output "aws_nat_ips" {
  description = "AWS egress addresses: loadBalancerSourceRanges / allow-remote-edge-to-api of k8s/overlays/gcp."
  value       = one(module.aws[*].nat_public_ips)
}

output "aws_ecr_repositories" {
  description = "Image names for k8s/overlays/aws (images: newName)."
  value       = one(module.aws[*].ecr_repositories)
}

output "aws_cluster_autoscaler_role_arn" {
  description = "Role the Cluster Autoscaler gets through Pod Identity (kube-system/cluster-autoscaler)."
  value       = one(module.aws[*].cluster_autoscaler_role_arn)
}

output "gcp_kubeconfig_command" {
  description = "Adds the GKE cluster to ~/.kube/config as context reelay-gcp."
  value       = one(module.gcp[*].kubeconfig_command)
}

output "gcp_cluster_endpoint" {
  description = "GKE control plane endpoint."
  value       = one(module.gcp[*].cluster_endpoint)
}

output "gcp_media_bucket" {
  description = "REELAY_STORAGE of k8s/overlays/gcp/reelay.env: gs://<this>/media."
  value       = one(module.gcp[*].media_bucket)
}

output "gcp_db_secret_id" {
  description = "Secret Manager secret with reelay.toml for the gcp reelay-db Secret."
  value       = one(module.gcp[*].db_secret_id)
}

output "gcp_private_services_cidr" {
  description = "Database range allowed by k8s/overlays/gcp (allow-database-egress)."
  value       = one(module.gcp[*].private_services_cidr)
}

output "gcp_nat_ips" {
  description = "GCP egress addresses: loadBalancerSourceRanges / allow-remote-edge-to-api of k8s/overlays/aws."
  value       = one(module.gcp[*].nat_ips)
}

output "gcp_lb_addresses" {
  description = "Static addresses of the gcp edge and reelay-api-remote load balancers (DNS records)."
  value       = one(module.gcp[*].lb_addresses)
}

output "gcp_workload_service_account" {
  description = "iam.gke.io/gcp-service-account of k8s/overlays/gcp."
  value       = one(module.gcp[*].workload_service_account)
}

output "gcp_artifact_registry" {
  description = "Image name prefix for k8s/overlays/gcp (images: newName)."
  value       = one(module.gcp[*].artifact_registry)
}
