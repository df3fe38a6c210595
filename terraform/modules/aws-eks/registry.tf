# Container registries for the two images (docker/processor.Dockerfile, docker/edge.Dockerfile):
# immutable tags (a tag always means the same image), scanned on push, KMS-encrypted.

resource "aws_ecr_repository" "this" {
  for_each             = toset(["reelay-processor", "reelay-edge"])
  name                 = each.value
  image_tag_mutability = "IMMUTABLE"
  force_delete         = !var.deletion_protection

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.this.arn
  }

  tags = local.tags
}

resource "aws_ecr_lifecycle_policy" "this" {
  for_each   = aws_ecr_repository.this
  repository = each.value.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the 50 most recent images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = 50
      }
      action = { type = "expire" }
    }]
  })
}
