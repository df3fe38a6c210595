output "cluster_name" {
  description = "GKE cluster name."
  value       = google_container_cluster.this.name
}

output "cluster_endpoint" {
  description = "GKE control plane endpoint."
  value       = google_container_cluster.this.endpoint
}

output "kubeconfig_command" {
  description = "Adds this cluster to ~/.kube/config and names the context reelay-gcp."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.this.name} --region ${var.region} --project ${var.project_id} && kubectl config rename-context gke_${var.project_id}_${var.region}_${google_container_cluster.this.name} reelay-gcp"
}

output "nat_ips" {
  description = "Egress addresses of this cluster: the aws overlay admits them to its reelay-api-remote."
  value       = google_compute_address.nat[*].address
}

output "lb_addresses" {
  description = "Static addresses of the reelay-edge and reelay-api-remote load balancers (for DNS)."
  value       = { for k, a in google_compute_address.lb : k => a.address }
}

output "private_services_cidr" {
  description = "Range Cloud SQL's private IP comes from (the database NetworkPolicy of k8s/overlays/gcp)."
  value       = var.private_services_cidr
}

output "media_bucket" {
  description = "Media bucket (REELAY_STORAGE=gs://<bucket>/media in k8s/overlays/gcp/reelay.env)."
  value       = google_storage_bucket.media.name
}

output "db_private_ip" {
  description = "Job store private address."
  value       = google_sql_database_instance.this.private_ip_address
}

output "db_secret_id" {
  description = "Secret Manager secret holding reelay.toml (database_url) for the reelay-db Kubernetes Secret."
  value       = google_secret_manager_secret.db.secret_id
}

output "workload_service_account" {
  description = "Google service account of reelay-api and video-processor (iam.gke.io/gcp-service-account in k8s/overlays/gcp)."
  value       = google_service_account.workload.email
}

output "artifact_registry" {
  description = "Image repository prefix (newName of the images in k8s/overlays/gcp)."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.this.repository_id}"
}
