#!/usr/bin/env bash
# Runs the same workload (bench/loadgen.py) against Synapse and a Neurite node in one run,
# alternating, and prints a table with both figures and their ratio.
#
# Usage: bench/compare-synapse.sh [--quick] [--reps N] [--federation] [--out DIR]
#
#   --quick       small sizes (a few minutes); the default is the full workload of issue 6
#   --reps N      repetitions per server (default 1); order alternates N,S then S,N, ...
#   --federation  also run bench/federation.py and bench/quick_figures.py (Neurite only)
#   --out DIR     keep the JSON results and server logs there (default: a temporary folder)
#
# Environment: SYNAPSE_VERSION (default below), NEURITE_BIN (skip the cargo build and use
# this binary), NEURITE_PROFILE (cargo profile to build, default release; small-release is the
# size-tuned profile the phone library ships with), CARGO_TARGET_DIR (default
# ~/.cache/neurite/release-target), PYTHON.
#
# Everything listens on 127.0.0.1 only. Synapse is installed from PyPI into a virtual
# environment under ~/.cache/neurite/synapse-venv; both servers store into SQLite.
set -euo pipefail

SYNAPSE_VERSION="${SYNAPSE_VERSION:-1.163.2}"
PYTHON="${PYTHON:-python3}"
CACHE="${HOME}/.cache/neurite"
VENV="${CACHE}/synapse-venv"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "${HERE}/.." && pwd)"

QUICK=""
REPS=1
FEDERATION=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK="--quick" ;;
    --reps) REPS="$2"; shift ;;
    --federation) FEDERATION=1 ;;
    --out) OUT="$2"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$OUT" ] || OUT="$(mktemp -d -t neurite-compare-XXXXXX)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

# --- Synapse ---------------------------------------------------------------------------
if ! "${VENV}/bin/python" -c "import synapse, sys; sys.exit(synapse.__version__ != '${SYNAPSE_VERSION}')" 2>/dev/null; then
  echo "installing matrix-synapse ${SYNAPSE_VERSION} into ${VENV}" >&2
  "$PYTHON" -m venv "$VENV"
  "${VENV}/bin/pip" install -q --upgrade pip
  "${VENV}/bin/pip" install -q "matrix-synapse==${SYNAPSE_VERSION}"
fi
SYNAPSE_PY="${VENV}/bin/python"

# --- Neurite ---------------------------------------------------------------------------
if [ -z "${NEURITE_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${CACHE}/release-target}"
  NEURITE_PROFILE="${NEURITE_PROFILE:-release}"
  (cd "$ROOT" && cargo build --profile "$NEURITE_PROFILE" -p neurite-demo --locked)
  NEURITE_BIN="${CARGO_TARGET_DIR}/${NEURITE_PROFILE}/neurite"
fi

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Writes a Synapse configuration for a fresh data directory $1 listening on port $2.
synapse_config() {
  local dir="$1" port="$2"
  cat >"${dir}/log.yaml" <<EOF
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: ${dir}/homeserver.log
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
EOF
  cat >"${dir}/homeserver.yaml" <<EOF
server_name: "bench.localhost"
pid_file: ${dir}/homeserver.pid
listeners:
  - port: ${port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: ${dir}/homeserver.db
log_config: ${dir}/log.yaml
media_store_path: ${dir}/media_store
signing_key_path: ${dir}/signing.key
trusted_key_servers: []
suppress_key_server_warning: true
report_stats: false
macaroon_secret_key: "bench-macaroon-secret"
form_secret: "bench-form-secret"
enable_registration: true
enable_registration_without_verification: true
# Synapse's default bcrypt cost (2^12); Neurite runs with its default argon2id cost too.
bcrypt_rounds: 12
# Only the client API, on loopback; no federation traffic.
federation_domain_whitelist: []
# Identical repeated /sync requests would otherwise be answered from a 2-minute cache.
caches:
  sync_response_cache_duration: 0
rc_message: {per_second: 1000000, burst_count: 1000000}
rc_registration: {per_second: 1000000, burst_count: 1000000}
rc_registration_token_validity: {per_second: 1000000, burst_count: 1000000}
rc_login:
  address: {per_second: 1000000, burst_count: 1000000}
  account: {per_second: 1000000, burst_count: 1000000}
  failed_attempts: {per_second: 1000000, burst_count: 1000000}
rc_joins:
  local: {per_second: 1000000, burst_count: 1000000}
  remote: {per_second: 1000000, burst_count: 1000000}
rc_joins_per_room: {per_second: 1000000, burst_count: 1000000}
rc_invites:
  per_room: {per_second: 1000000, burst_count: 1000000}
  per_user: {per_second: 1000000, burst_count: 1000000}
  per_issuer: {per_second: 1000000, burst_count: 1000000}
rc_3pid_validation: {per_second: 1000000, burst_count: 1000000}
rc_admin_redaction: {per_second: 1000000, burst_count: 1000000}
rc_room_creation: {per_second: 1000000, burst_count: 1000000}
rc_presence:
  per_user: {per_second: 1000000, burst_count: 1000000}
rc_delayed_event_mgmt: {per_second: 1000000, burst_count: 1000000}
rc_reports: {per_second: 1000000, burst_count: 1000000}
rc_media_create: {per_second: 1000000, burst_count: 1000000}
rc_federation: {window_size: 1000, sleep_limit: 1000000, sleep_delay: 0, reject_limit: 1000000, concurrent: 1000000}
EOF
  "$SYNAPSE_PY" -m synapse.app.homeserver -c "${dir}/homeserver.yaml" --generate-keys >/dev/null
}

run_neurite() {
  local i="$1" dir port
  dir="$(mktemp -d -t neurite-data-XXXXXX)"
  port="$(free_port)"
  "$PYTHON" "${HERE}/loadgen.py" run --name neurite --url "http://127.0.0.1:${port}" $QUICK \
    --db "${dir}/neurite.db" --json "${OUT}/neurite-${i}.json" --log "${OUT}/neurite-${i}.log" -- \
    "$NEURITE_BIN" run --data-dir "$dir" --client-addr "127.0.0.1:${port}" --registration open \
    --no-rate-limits --no-mdns --p2p-listen /ip4/127.0.0.1/tcp/0 >/dev/null
  rm -rf "$dir"
}

run_synapse() {
  local i="$1" dir port
  dir="$(mktemp -d -t synapse-data-XXXXXX)"
  port="$(free_port)"
  synapse_config "$dir" "$port"
  "$PYTHON" "${HERE}/loadgen.py" run --name synapse --url "http://127.0.0.1:${port}" $QUICK \
    --db "${dir}/homeserver.db" --json "${OUT}/synapse-${i}.json" --log "${OUT}/synapse-${i}.log" -- \
    "$SYNAPSE_PY" -m synapse.app.homeserver -c "${dir}/homeserver.yaml" >/dev/null
  cp "${dir}/homeserver.log" "${OUT}/synapse-${i}.homeserver.log" 2>/dev/null || true
  rm -rf "$dir"
}

echo "results in ${OUT}" >&2
for i in $(seq 1 "$REPS"); do
  if [ $((i % 2)) -eq 1 ]; then
    run_neurite "$i"; run_synapse "$i"
  else
    run_synapse "$i"; run_neurite "$i"
  fi
done

echo
echo "## Neurite vs Synapse ${SYNAPSE_VERSION}, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "ratio = Synapse / Neurite: above 1, Neurite is faster or smaller, except for throughput, where above 1 means Synapse sends more per second."
"$PYTHON" "${HERE}/loadgen.py" table "${OUT}"/neurite-*.json "${OUT}"/synapse-*.json | tee "${OUT}/table.md"

if [ "$FEDERATION" = 1 ]; then
  echo
  echo "## Neurite only: start-up and send latency (bench/quick_figures.py)"
  "$PYTHON" "${HERE}/quick_figures.py" "$NEURITE_BIN" | tee "${OUT}/quick_figures.txt"
  echo
  echo "## Neurite only: federation over loopback (bench/federation.py)"
  if [ -n "$QUICK" ]; then FED_ARGS=(--messages 50 --missed 200 --idle 10); else FED_ARGS=(); fi
  "$PYTHON" "${HERE}/federation.py" "$NEURITE_BIN" "${FED_ARGS[@]}" | tee "${OUT}/federation.txt"
fi
