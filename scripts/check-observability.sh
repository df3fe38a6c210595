#!/usr/bin/env bash
# Observability checks against real processes (docs/operations.md):
#   1. `reelay up` (two `reelay serve` clusters + `reelay edge` with nginx) on free loopback ports,
#      state in a temporary directory; one tiny job through the edge, one refused upload;
#   2. `promtool check metrics` on both clusters' /metrics and the edge's /edge/metrics;
#   3. the dashboard is served at / by the edge and a cluster, with its security headers;
#   4. `promtool check config` (both scrape configs), `check rules`, `test rules`;
#   5. deploy/grafana/test_dashboard.py, also against the scraped pages.
# Exits non-zero on the first failure. Installs promtool (Debian's `prometheus`), ffmpeg, nginx,
# curl and python3-yaml when missing. Takes about 20 s after the build.
#
# Environment: REELAY_BIN (skip the build and use this binary), KEEP_TMP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$(date +%s)

say() { echo "check-observability: $*" >&2; }
fail() {
  say "FAILED: $*"
  exit 1
}

# ---- tools
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import yaml' >/dev/null 2>&1 || need+=(python3-yaml)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian's prometheus package starts a server where an init system runs; only promtool is used.
fi
python3 -c 'import yaml' >/dev/null 2>&1 || fail "python3 cannot import yaml (python3-yaml)"

if [ -z "${REELAY_BIN:-}" ]; then
  cargo build --locked -p reelay
  REELAY_BIN="$root/target/debug/reelay"
fi

tmp=$(mktemp -d /tmp/reelay-observability.XXXXXX)
up_pid=""
cleanup() {
  local rc=$?
  if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
    kill -TERM "$up_pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
      kill -0 "$up_pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -KILL "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
  fi
  if [ $rc -ne 0 ] && [ -f "$tmp/up.log" ]; then
    say "last lines of the reelay up log:"
    tail -20 "$tmp/up.log" >&2
  fi
  if [ "${KEEP_TMP:-}" = 1 ]; then say "kept $tmp"; else rm -rf "$tmp"; fi
  say "$([ $rc -eq 0 ] && echo passed || echo FAILED) in $(($(date +%s) - started)) s"
  exit $rc
}
trap cleanup EXIT

# ---- reelay up on free ports
read -r p_edge p_ctl p_aws p_gcp < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks: s.close()')
cat >"$tmp/topology.toml" <<EOF
state_dir = "state"
shutdown_grace_seconds = 2
[edge]
listen = "127.0.0.1:$p_edge"
control_listen = "127.0.0.1:$p_ctl"
work_dir = "state/edge"
reload_min_interval_ms = 200
[edge.health]
interval_ms = 500
timeout_ms = 400
rise = 1
[[edge.clusters]]
name = "aws"
url = "http://127.0.0.1:$p_aws"
[[edge.clusters]]
name = "gcp"
url = "http://127.0.0.1:$p_gcp"
[[clusters]]
name = "aws"
listen = "127.0.0.1:$p_aws"
workers = 1
[[clusters]]
name = "gcp"
listen = "127.0.0.1:$p_gcp"
workers = 1
EOF
"$REELAY_BIN" up --topology "$tmp/topology.toml" >"$tmp/up.log" 2>&1 &
up_pid=$!
edge="http://127.0.0.1:$p_edge"
for i in $(seq 1 120); do
  kill -0 "$up_pid" 2>/dev/null || fail "reelay up exited early"
  st=$(curl -fsS --max-time 2 "$edge/edge/status" 2>/dev/null || true)
  [ -n "$st" ] && [ "$(grep -o '"health":"up"' <<<"$st" | wc -l)" -eq 2 ] && break
  [ "$i" -eq 120 ] && fail "the edge did not see both clusters up within 60 s"
  sleep 0.5
done
say "reelay up: edge $edge, clusters :$p_aws :$p_gcp"
# reelay up is protected: every /v1 request carries the admin token it wrote.
auth=(-H "Authorization: Bearer $(cat "$tmp/state/admin.token")")

# ---- one tiny job, one refused upload
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=96x64:rate=10:duration=1 \
  -f lavfi -i sine=duration=1 -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest "$tmp/tiny.mp4"
job=$(curl -fsS "${auth[@]}" -F 'spec={"outputs":[{"preset":"mp4-360p"},{"preset":"thumbnail"}]}' \
  -F "file=@$tmp/tiny.mp4" "$edge/v1/jobs") || fail "submitting the tiny job"
id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$job")
printf 'not a video\n' >"$tmp/junk.mp4"
code=$(curl -sS "${auth[@]}" -o "$tmp/refused.json" -w '%{http_code}' -F 'spec={"outputs":[{"preset":"mp4-360p"}]}' \
  -F "file=@$tmp/junk.mp4" "$edge/v1/jobs")
[ "$code" = 422 ] || fail "a text file should be refused with 422, got $code: $(cat "$tmp/refused.json")"
for i in $(seq 1 120); do
  status=$(curl -fsS "${auth[@]}" "$edge/v1/jobs/$id" 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null) || status=unreadable
  [ "$status" = succeeded ] && break
  case "$status" in failed | cancelled) fail "job $id ended $status" ;; esac
  [ "$i" -eq 120 ] && fail "job $id still $status after 60 s"
  sleep 0.5
done
curl -fsS "${auth[@]}" "$edge/v1/jobs?limit=5" >/dev/null || fail "merged job list"
say "job $id succeeded"
# One job that fails for good in a worker (a URL that resolves to loopback is refused), so the
# failure counters exist on the scraped pages.
bad=$(curl -fsS "${auth[@]}" -H 'content-type: application/json' \
  -d '{"input":{"url":"http://localhost:9/x.mp4"},"outputs":[{"preset":"mp4-360p"}]}' "$edge/v1/jobs") ||
  fail "submitting the failing job"
bad_id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$bad")
for i in $(seq 1 60); do
  status=$(curl -fsS "${auth[@]}" "$edge/v1/jobs/$bad_id" 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null) || status=unreadable
  [ "$status" = failed ] && break
  [ "$i" -eq 60 ] && fail "job $bad_id should have failed (forbidden_url), still $status"
  sleep 0.5
done
say "job $bad_id failed as expected"

# ---- the metrics pages
sleep 1 # let the edge read the clusters' load once more
fetch() {
  local url=$1 out=$2 ctype
  ctype=$(curl -fsS -o "$out" -w '%{content_type}' "$url") || fail "GET $url"
  case "$ctype" in text/plain*) ;; *) fail "$url answers Content-Type $ctype" ;; esac
  [ -s "$out" ] || fail "$url is empty"
}
fetch "http://127.0.0.1:$p_aws/metrics" "$tmp/metrics-aws.txt"
fetch "http://127.0.0.1:$p_gcp/metrics" "$tmp/metrics-gcp.txt"
fetch "$edge/edge/metrics" "$tmp/metrics-edge.txt"
for f in "$tmp"/metrics-*.txt; do
  if ! out=$(promtool check metrics <"$f" 2>&1) || [ -n "$out" ]; then
    fail "promtool check metrics $(basename "$f"):"$'\n'"$out"
  fi
  say "promtool check metrics $(basename "$f"): ok ($(grep -c '^# TYPE' "$f") metrics)"
done

# ---- the dashboard at / (edge through nginx, and a cluster)
for url in "$edge/" "http://127.0.0.1:$p_aws/"; do
  h=$(curl -fsS -D - -o "$tmp/index.html" "$url") || fail "GET $url"
  grep -qi "^content-security-policy: default-src 'none'" <<<"$h" || fail "$url: no strict Content-Security-Policy"
  grep -qi '^x-content-type-options: nosniff' <<<"$h" || fail "$url: no X-Content-Type-Options"
  grep -q 'data-mode=' "$tmp/index.html" || fail "$url: not the dashboard"
done
say "dashboard served at / by the edge and a cluster"

# ---- Prometheus configuration, rules, rule tests
promtool check config deploy/prometheus/prometheus-local.yml >/dev/null || fail "promtool check config prometheus-local.yml"
if out=$(promtool check config deploy/prometheus/prometheus.yml 2>&1); then
  say "promtool check config prometheus.yml: ok"
elif grep -q 'kubernetes_sd_configs not found' <<<"$out"; then
  # Debian's promtool is built without Kubernetes service discovery.
  say "this promtool has no Kubernetes service discovery; checking prometheus.yml with static targets instead"
  mkdir -p "$tmp/prom"
  cp -r deploy/prometheus/rules "$tmp/prom/"
  python3 - deploy/prometheus/prometheus.yml "$tmp/prom/prometheus.yml" <<'EOF' || fail "kubernetes_sd_configs of prometheus.yml"
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
roles = {"pod", "endpoints", "endpointslice", "service", "node", "ingress"}
n = 0
for sc in cfg["scrape_configs"]:
    sd = sc.pop("kubernetes_sd_configs", None)
    if sd is None:
        continue
    for entry in sd:
        n += 1
        assert entry.get("role") in roles, f"{sc['job_name']}: role {entry.get('role')!r}"
        ns = entry.get("namespaces", {})
        assert set(ns) <= {"names", "own_namespace"}, f"{sc['job_name']}: namespaces {ns}"
        assert all(isinstance(x, str) for x in ns.get("names", [])), f"{sc['job_name']}: namespaces.names"
        assert set(entry) <= {"role", "namespaces", "selectors", "api_server", "kubeconfig_file",
                              "attach_metadata", "follow_redirects"}, f"{sc['job_name']}: {sorted(entry)}"
    sc["static_configs"] = [{"targets": ["127.0.0.1:8080"]}]
assert n, "no kubernetes_sd_configs found"
yaml.safe_dump(cfg, open(sys.argv[2], "w"), sort_keys=False)
EOF
  promtool check config "$tmp/prom/prometheus.yml" >/dev/null || fail "promtool check config prometheus.yml (static copy)"
  say "promtool check config prometheus.yml (kubernetes_sd replaced by a static target): ok"
else
  fail "promtool check config prometheus.yml:"$'\n'"$out"
fi
promtool check rules deploy/prometheus/rules/reelay.rules.yml >/dev/null || fail "promtool check rules"
promtool test rules deploy/prometheus/rules/reelay.rules.test.yml >/dev/null || {
  promtool test rules deploy/prometheus/rules/reelay.rules.test.yml >&2 || true
  fail "promtool test rules"
}
say "promtool check rules, test rules: ok"

# ---- Grafana dashboard
REELAY_METRICS_FILES="$tmp/metrics-aws.txt $tmp/metrics-gcp.txt $tmp/metrics-edge.txt" \
  python3 deploy/grafana/test_dashboard.py || fail "deploy/grafana/test_dashboard.py"
