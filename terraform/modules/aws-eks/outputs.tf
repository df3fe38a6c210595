output "cluster_name" {
  description = "EKS cluster name."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "EKS API endpoint."
  value       = aws_eks_cluster.this.endpoint
}

output "region" {
  description = "AWS region."
  value       = local.region
}

output "kubeconfig_command" {
  description = "Adds this cluster to ~/.kube/config as context reelay-aws."
  value       = "aws eks update-kubeconfig --region ${local.region} --name ${aws_eks_cluster.this.name} --alias reelay-aws"
}

output "vpc_cidr" {
  description = "VPC CIDR (the database NetworkPolicy of k8s/overlays/aws)."
  value       = aws_vpc.this.cidr_block
}

output "nat_public_ips" {
  description = "Egress addresses of this cluster: the gcp overlay admits them to its reelay-api-remote."
  value       = aws_eip.nat[*].public_ip
}

output "media_bucket" {
  description = "Media bucket (REELAY_STORAGE=s3://<bucket>/media in k8s/overlays/aws/reelay.env)."
  value       = aws_s3_bucket.media.bucket
}

output "db_endpoint" {
  description = "Job store address."
  value       = aws_db_instance.this.address
}

output "db_secret_arn" {
  description = "Secrets Manager secret holding reelay.toml (database_url) for the reelay-db Kubernetes Secret."
  value       = aws_secretsmanager_secret.db.arn
}

output "ecr_repositories" {
  description = "Image repositories (newName of the images in k8s/overlays/aws)."
  value       = { for k, r in aws_ecr_repository.this : k => r.repository_url }
}

output "workload_role_arn" {
  description = "IAM role that reelay-api and video-processor assume through EKS Pod Identity."
  value       = aws_iam_role.workload.arn
}

output "cluster_autoscaler_role_arn" {
  description = "IAM role of the Cluster Autoscaler (kube-system/cluster-autoscaler, via Pod Identity)."
  value       = aws_iam_role.cluster_autoscaler.arn
}
