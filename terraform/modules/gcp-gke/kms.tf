# Customer-managed keys (rotated every 90 days): GKE application-layer secrets encryption,
# node boot disks, Cloud SQL, the media bucket and the image repository. Each Google service
# agent gets encrypt/decrypt on its own key only.

resource "google_kms_key_ring" "this" {
  project    = var.project_id
  name       = var.name
  location   = var.region
  depends_on = [google_project_service.this]
}

resource "google_kms_crypto_key" "this" {
  for_each        = toset(["gke-secrets", "disks", "sql", "storage", "registry"])
  name            = each.value
  key_ring        = google_kms_key_ring.this.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = "7776000s"
  labels          = local.labels

  lifecycle {
    prevent_destroy = true
  }
}

resource "google_project_service_identity" "this" {
  provider   = google-beta
  for_each   = toset(["sqladmin.googleapis.com", "artifactregistry.googleapis.com"])
  project    = var.project_id
  service    = each.value
  depends_on = [google_project_service.this]
}

data "google_storage_project_service_account" "this" {
  project    = var.project_id
  depends_on = [google_project_service.this]
}

locals {
  key_users = {
    gke-secrets = "serviceAccount:service-${local.project_number}@container-engine-robot.iam.gserviceaccount.com"
    disks       = "serviceAccount:service-${local.project_number}@compute-system.iam.gserviceaccount.com"
    sql         = "serviceAccount:${google_project_service_identity.this["sqladmin.googleapis.com"].email}"
    storage     = "serviceAccount:${data.google_storage_project_service_account.this.email_address}"
    registry    = "serviceAccount:${google_project_service_identity.this["artifactregistry.googleapis.com"].email}"
  }
}

resource "google_kms_crypto_key_iam_member" "service_agents" {
  for_each      = local.key_users
  crypto_key_id = google_kms_crypto_key.this[each.key].id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value
}
