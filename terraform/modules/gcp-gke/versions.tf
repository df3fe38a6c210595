terraform {
  required_version = ">= 1.6.0, < 2.0.0"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.30"
    }
    # Only for google_project_service_identity (the Cloud SQL and Artifact Registry service
    # agents that must be granted the CMEK keys before the resources exist).
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.30"
    }
  }
}
