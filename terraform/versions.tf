# Terraform and provider versions. `terraform init` writes .terraform.lock.hcl with the exact
# provider builds: commit it.
#
# aws ~> 5.100: modules/aws-eks was validated (`terraform validate`) against 5.100.0.
# google/google-beta ~> 6.30: modules/gcp-gke is written against the 6.x schema (it could not
# be validated where it was written: no Google provider was available offline).
#
# State holds the generated database password: keep it in an encrypted remote backend with
# restricted access, e.g.
#   terraform { backend "s3" { bucket = "...", key = "reelay/terraform.tfstate",
#               region = "...", encrypt = true, use_lockfile = true } }
# or backend "gcs" (encrypted at rest, optionally with a CMEK).
terraform {
  required_version = ">= 1.6.0, < 2.0.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
    google = {
      source  = "hashicorp/google"
      version = "~> 6.30"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.30"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
}
