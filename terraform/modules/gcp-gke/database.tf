# The job store: Cloud SQL for PostgreSQL 16, private IP only (private services access),
# regional (standby in another zone), CMEK-encrypted, TLS required, automated backups with
# point-in-time recovery, audit and connection logging.

resource "google_sql_database_instance" "this" {
  #checkov:skip=CKV_GCP_6:ssl_mode ENCRYPTED_ONLY requires TLS on every connection; client certificates (TRUSTED_CLIENT_CERTIFICATE_REQUIRED) would need per-pod certificate distribution, and the instance has only a private IP reachable from the cluster's NetworkPolicy-restricted pods.
  #checkov:skip=CKV_GCP_79:Pinned to PostgreSQL 16 like RDS (aws-eks); reelay's SQL needs nothing newer than 15, the version make test and docker-compose.yml run (Debian bookworm's); upgrade deliberately.
  project             = var.project_id
  name                = "${var.name}-jobs"
  region              = var.region
  database_version    = "POSTGRES_16"
  encryption_key_name = google_kms_crypto_key.this["sql"].id
  deletion_protection = var.deletion_protection

  settings {
    tier                        = var.db_tier
    edition                     = "ENTERPRISE"
    availability_type           = "REGIONAL"
    disk_type                   = "PD_SSD"
    disk_size                   = 50
    disk_autoresize             = true
    disk_autoresize_limit       = 500
    deletion_protection_enabled = var.deletion_protection
    user_labels                 = local.labels

    ip_configuration {
      ipv4_enabled    = false
      private_network = google_compute_network.this.id
      ssl_mode        = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "02:00"
      transaction_log_retention_days = 7
      backup_retention_settings {
        retained_backups = 14
        retention_unit   = "COUNT"
      }
    }

    maintenance_window {
      day          = 7
      hour         = 3
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled  = true
      record_application_tags = false
      record_client_address   = false
    }

    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_duration"
      value = "on"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
  }

  depends_on = [
    google_service_networking_connection.this,
    google_kms_crypto_key_iam_member.service_agents,
  ]
}

resource "google_sql_database" "reelay" {
  project  = var.project_id
  name     = "reelay"
  instance = google_sql_database_instance.this.name
}

resource "google_sql_user" "reelay" {
  project  = var.project_id
  name     = "reelay"
  instance = google_sql_database_instance.this.name
  password = var.db_password
}

# reelay.toml for the reelay-db Kubernetes Secret (README "Deploy" reads it from here, or
# External Secrets Operator syncs it).
resource "google_secret_manager_secret" "db" {
  project   = var.project_id
  secret_id = "${var.name}-job-store"
  labels    = local.labels
  replication {
    auto {}
  }
  depends_on = [google_project_service.this]
}

resource "google_secret_manager_secret_version" "db" {
  secret = google_secret_manager_secret.db.id
  secret_data = format(
    "database_url = \"postgres://reelay:%s@%s:5432/reelay?sslmode=require\"\n",
    urlencode(var.db_password),
    google_sql_database_instance.this.private_ip_address,
  )
}
