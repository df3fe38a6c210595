# GKE Workload Identity: the reelay-api and video-processor Kubernetes ServiceAccounts act as
# one Google service account that may use the media bucket's objects and nothing else. It may
# also sign as itself (signBlob), which presigned download URLs (REELAY_PRESIGN_DOWNLOADS) need
# when there is no key file.

resource "google_service_account" "workload" {
  project      = var.project_id
  account_id   = "${var.name}-workload"
  display_name = "reelay api and workers (media bucket)"
}

resource "google_storage_bucket_iam_member" "workload" {
  bucket = google_storage_bucket.media.name
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${google_service_account.workload.email}"
}

resource "google_service_account_iam_member" "workload_identity" {
  for_each           = toset(var.workload_service_accounts)
  service_account_id = google_service_account.workload.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.namespace}/${each.value}]"
  depends_on         = [google_container_cluster.this]
}

resource "google_service_account_iam_member" "workload_sign" {
  service_account_id = google_service_account.workload.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.workload.email}"
}
