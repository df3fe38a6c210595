# The media bucket: uniform access, public access prevented, CMEK, versioned, lifecycle rules
# (inputs, outputs and task intermediates deleted a day after the cluster's [retention]
# defaults, a backstop for its sweeper; old versions after 30 days, abandoned multipart uploads
# after 7), access logs to a separate bucket.

resource "google_storage_bucket" "logs" {
  #checkov:skip=CKV_GCP_62:This is the access-log bucket itself; logging it into itself would loop.
  project                     = var.project_id
  name                        = "${var.name}-logs-${var.project_id}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = !var.deletion_protection
  labels                      = local.labels

  versioning {
    enabled = true
  }

  encryption {
    default_kms_key_name = google_kms_crypto_key.this["storage"].id
  }

  lifecycle_rule {
    condition {
      age = var.log_retention_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}

resource "google_storage_bucket" "media" {
  project                     = var.project_id
  name                        = "${var.name}-media-${var.project_id}"
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = !var.deletion_protection
  labels                      = local.labels

  versioning {
    enabled = true
  }

  encryption {
    default_kms_key_name = google_kms_crypto_key.this["storage"].id
  }

  logging {
    log_bucket        = google_storage_bucket.logs.name
    log_object_prefix = "gcs-access/media/"
  }

  lifecycle_rule {
    condition {
      age            = var.input_retention_days
      matches_prefix = ["media/inputs/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.output_retention_days
      matches_prefix = ["media/outputs/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.task_retention_days
      matches_prefix = ["media/tasks/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.service_agents]
}
