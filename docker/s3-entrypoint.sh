#!/bin/bash
# Creates the bucket directory (s3s-fs maps buckets to top-level directories), then serves.
# S3_ACCESS_KEY / S3_SECRET_KEY come from the environment (docker-compose.yml reads them
# from .env); S3_BUCKET names the bucket.
set -euo pipefail
: "${S3_ACCESS_KEY:?set S3_ACCESS_KEY}" "${S3_SECRET_KEY:?set S3_SECRET_KEY}"
mkdir -p "/srv/s3/${S3_BUCKET:-media}"
exec s3s-fs --host 0.0.0.0 --port 9000 \
  --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" /srv/s3
