#!/usr/bin/env bash
# Build the training image (docker/Dockerfile) and push it to ECR as your dev image
#   <account>.dkr.ecr.<region>.amazonaws.com/<user>-sagemaker-dev:<tag>  (and :latest)
# then launch on it with `lbm launch --image-uri <user>-sagemaker-dev ...`.
#
# usage: scripts/build_and_push_image.sh [--region REGION] [--profile PROFILE] [--account ACCOUNT]
#            [--user USER] [--repository NAME] [--tag TAG] [--weights DIR] [--no-push]
# Defaults: region $AWS_DEFAULT_REGION else us-east-1; the account of your credentials; user the local part
# of `git config user.email` (else $USER), as lbm names your jobs; tag the commit (with -dirty when the work
# tree has changes). --weights DIR puts pretrained weights in the image (DIR/huggingface: an HF_HOME with
# CLIP, DIR/torch: a TORCH_HOME with torchvision's), for configs that start from them.
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "build_and_push_image: error: $*" >&2; exit 2; }

region="${AWS_DEFAULT_REGION:-us-east-1}"
account="" user="" repository="" tag="" weights="" push=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --region|--profile|--account|--user|--repository|--tag|--weights)
      [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"
      case "$1" in
        --region) region="$2" ;;
        --profile) export AWS_PROFILE="$2" ;;
        --account) account="$2" ;;
        --user) user="$2" ;;
        --repository) repository="$2" ;;
        --tag) tag="$2" ;;
        --weights) weights="$2" ;;
      esac
      shift 2 ;;
    --no-push) push=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

cd "$(dirname "$0")/.."
[[ "$region" =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] || die "--region '$region' is not an AWS region name"
if [[ -z "$user" ]]; then
  email="$(git config user.email || true)"
  user="${email%%@*}"
  user="${user:-${USER:-}}"
fi
user="$(printf '%s' "$user" | tr '[:upper:]' '[:lower:]' | sed -e 's/[^a-z0-9-]/-/g' -e 's/^-*//' -e 's/-*$//')"
[[ -n "$user" ]] || die "cannot tell your user name: pass --user"
repository="${repository:-${user}-sagemaker-dev}"
[[ "$repository" =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]] || die "--repository '$repository' is not an ECR repository name"
if [[ -z "$tag" ]]; then
  tag="$(git rev-parse --short=12 HEAD)"
  git diff --quiet HEAD -- || tag="${tag}-dirty"
fi
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "--tag '$tag' is not a Docker tag"
build_context=()
if [[ -n "$weights" ]]; then
  [[ -d "$weights/huggingface" || -d "$weights/torch" ]] \
    || die "--weights '$weights' holds neither huggingface/ nor torch/"
  build_context=(--build-context "weights=$(cd "$weights" && pwd)")
fi
if [[ -z "$account" ]]; then
  account="$(aws sts get-caller-identity --query Account --output text --region "$region")" \
    || die "cannot read your AWS account: log in (aws sso login) or pass --profile"
fi
[[ "$account" =~ ^[0-9]{12}$ ]] || die "account '$account' is not a 12-digit AWS account id"

registry="${account}.dkr.ecr.${region}.amazonaws.com"
image="${registry}/${repository}"
docker build --platform linux/amd64 --file docker/Dockerfile "${build_context[@]}" \
  --tag "${image}:${tag}" --tag "${image}:latest" .
if [[ "$push" == 0 ]]; then
  echo "built ${image}:${tag} (not pushed)"
  exit 0
fi
if ! aws ecr describe-repositories --region "$region" --repository-names "$repository" >/dev/null 2>&1; then
  aws ecr create-repository --region "$region" --repository-name "$repository" \
    --image-scanning-configuration scanOnPush=true >/dev/null
  echo "created ECR repository ${repository} in ${region}"
fi
aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry"
docker push "${image}:${tag}"
docker push "${image}:latest"
echo "pushed ${image}:${tag}"
echo "launch with: lbm launch --region ${region} --image-uri ${repository}:${tag} ..."
