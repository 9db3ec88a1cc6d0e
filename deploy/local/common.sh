# Shared by deploy/local/up and deploy/local/down (sourced, not run): where the local
# system lives, which processes it runs, and how to stop one of them safely.
#
# Settings (environment variables; the defaults suit a developer's machine):
#   CASEBUS_LOCAL_DIR        state directory (keys, tokens, NATS store, logs, PIDs);
#                            default <repo>/.casebus-local (git-ignored)
#   CASEBUS_LOCAL_BIN_DIR    where the casebus binaries are; default <repo>/target/release
#   CASEBUS_LOCAL_SKIP_BUILD 1: do not run cargo build (use what is in the bin dir)
#   CASEBUS_LOCAL_PORT_BASE  first port of the block the system listens on (default
#                            14200: NATS on base+22, the dashboard on base+80); 0 lets
#                            every process pick a free port (read back from ready files)
#   CASEBUS_LOCAL_SIM_ARGS   arguments of the workload simulator
#                            (default: --rate 5 --cases 0 --duration 8h)
#   CASEBUS_LOCAL_READY_TIMEOUT  seconds to wait for each process to be ready (60)
#   NATS_SERVER_BIN          the nats-server binary (default: from PATH or /usr/sbin)

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DIR="${CASEBUS_LOCAL_DIR:-$REPO/.casebus-local}"
BIN_DIR="${CASEBUS_LOCAL_BIN_DIR:-$REPO/target/release}"
case "$BIN_DIR" in /*) ;; *) BIN_DIR="$REPO/$BIN_DIR" ;; esac
PORT_BASE="${CASEBUS_LOCAL_PORT_BASE:-14200}"
READY_TIMEOUT="${CASEBUS_LOCAL_READY_TIMEOUT:-60}"

# The marker that says a directory is a casebus local state directory (so `down --purge`
# never deletes anything else).
MARKER="CASEBUS_LOCAL_STATE"

# The demo offices, one per agency: office id, binary, office name.
OFFICES=(
  "customs:ningbo casebus-customs Ningbo Customs"
  "ip_center:zhejiang casebus-ip-center Zhejiang IP Protection Center"
  "public_security:ningbo casebus-public-security Ningbo Public Security Bureau"
  "procuratorate:ningbo casebus-procuratorate Ningbo People's Procuratorate"
  "court:hangzhou-ip casebus-court Hangzhou Intellectual Property Court"
)

# The origin of the local transparency log (the first line of its checkpoints).
LOG_ORIGIN="casebus.local/cases"

# Process names in the order `down` stops them (the reverse of the start order).
STOP_ORDER=(simulator monitor court-witness procuratorate-witness public-security-witness
  ip-center-witness customs-witness gateway court procuratorate public-security ip-center
  customs nats-server)

say() { printf '%s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

# port <offset>: a port of the block, or 0 when every process picks its own.
port() {
  if [[ "$PORT_BASE" == 0 ]]; then echo 0; else echo $((PORT_BASE + $1)); fi
}

# alive <pid>: whether the process exists (and is not a zombie).
alive() {
  local pid=$1 state
  [[ -r /proc/$pid/stat ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ "$state" != Z ]]
}

# ours <pid> <binary>: the process runs <binary> (guards against a reused PID).
ours() {
  local pid=$1 binary=$2
  alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$binary"
}

# stop_one <name>: stops the process recorded in pids/<name>.pid: SIGTERM, then
# SIGKILL after 20 s. Removes the PID file.
stop_one() {
  local name=$1 file="$DIR/pids/$1.pid" pid binary waited=0
  [[ -f "$file" ]] || return 0
  read -r pid binary <"$file" || true
  if [[ -n "${pid:-}" ]] && ours "$pid" "${binary:-$name}"; then
    kill -TERM "$pid" 2>/dev/null || true
    while alive "$pid" && ((waited < 200)); do
      sleep 0.1
      waited=$((waited + 1))
    done
    if alive "$pid"; then
      say "  $name (pid $pid) did not stop in 20 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    say "  stopped $name (pid $pid)"
  fi
  rm -f "$file"
}

# stop_all: stops every process a previous `up` started, in order.
stop_all() {
  local name
  for name in "${STOP_ORDER[@]}"; do
    stop_one "$name"
  done
}
