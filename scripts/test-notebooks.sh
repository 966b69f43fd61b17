#!/usr/bin/env bash
# Run every notebook under nbval against the built-in capture server, then check that a headless
# papermill run of the scheduled report delivers its mail, and fails when the server is down.
#   usage: bash scripts/test-notebooks.sh [VENV] [--update]      (VENV default: .venv)
#   --update re-executes the notebooks in place, under exactly the conditions nbval checks them
#   in, to refresh their committed reference outputs (then review the diff and commit).
# Exits non-zero on any failure; every server it starts is stopped on exit (and by a watchdog).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
UPDATE=0
args=()
for a in "$@"; do
  if [[ $a == --update ]]; then UPDATE=1; else args+=("$a"); fi
done
VENV=$(cd "${args[0]:-${VENV:-.venv}}" && pwd)
PY=$VENV/bin/python
SANITIZE=$ROOT/notebooks/nbval-sanitize.cfg
WORK=$(mktemp -d /tmp/smtp-magic-notebooks.XXXXXX)
# The longest a capture server may live, whatever happens to this script.
SERVER_LIFETIME=${SERVER_LIFETIME:-900}

server_pid=""
stop_server() {
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
cleanup() { stop_server; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf -- '-- %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# Keep the host's Jupyter/IPython configuration and the user's outbox and capture dir out of it
# (scripts/test.sh already isolates the Jupyter dirs; this also works when run on its own).
export JUPYTER_CONFIG_DIR=${JUPYTER_CONFIG_DIR:-$WORK/jupyter-config}
export JUPYTER_DATA_DIR=${JUPYTER_DATA_DIR:-$WORK/jupyter-data}
export JUPYTER_RUNTIME_DIR=${JUPYTER_RUNTIME_DIR:-$WORK/jupyter-runtime}
export IPYTHONDIR=${IPYTHONDIR:-$WORK/ipython}
export PYDEVD_DISABLE_FILE_VALIDATION=1
unset SMTP_HOST SMTP_PORT SMTP_USERNAME SMTP_PASSWORD SMTP_SECURITY SMTP_SENDER SMTP_MAGIC_OUTBOX
# matplotlib's font cache is built once, not inside the first notebook's time budget.
export MPLCONFIGDIR=$WORK/matplotlib
MPLBACKEND=Agg "$PY" -c "import matplotlib.pyplot" 2>/dev/null || true

# start_server DIR: a capture server on a free port storing into DIR/maildir; sets $port.
start_server() {
  local dir=$1 log=$1/serve.log i
  mkdir -p "$dir"
  : >"$log"
  timeout "$SERVER_LIFETIME" "$VENV/bin/smtp-magic" serve --port 0 --maildir "$dir/maildir" \
    >"$log" 2>&1 &
  server_pid=$!
  port=""
  for ((i = 0; i < 100; i++)); do
    port=$(sed -n 's/^Capture server listening on [^ ]*:\([0-9][0-9]*\),.*/\1/p' "$log")
    [[ -n $port ]] && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$log" >&2
  fail "the capture server did not start"
}

# count_mail DIR: how many messages the capture server stored in DIR/maildir.
count_mail() { find "$1/maildir/new" "$1/maildir/cur" -type f 2>/dev/null | wc -l; }

# 1. nbval: every notebook, each against its own capture server with an empty Maildir, so that
#    what %smtp_inbox shows does not depend on which notebooks ran before.
shopt -s nullglob
notebooks=("$ROOT"/notebooks/*.ipynb)
((${#notebooks[@]})) || fail "no notebooks in notebooks/"
for nb in "${notebooks[@]}"; do
  name=$(basename "$nb" .ipynb)
  dir=$WORK/$name
  start_server "$dir"
  set +e
  (
    export XDG_DATA_HOME=$dir/data SMTP_MAGIC_CAPTURE_DIR=$dir/maildir
    export SMTP_HOST=127.0.0.1 SMTP_PORT=$port SMTP_SENDER="Sales reports <reports@example.org>"
    if ((UPDATE)); then
      say "executing $name.ipynb in place (capture server on 127.0.0.1:$port)"
      cd "$ROOT/notebooks"
      "$PY" -m jupyter nbconvert --to notebook --execute --inplace \
        --ExecutePreprocessor.kernel_name=python3 --ExecutePreprocessor.timeout=180 \
        --ExecutePreprocessor.store_widget_state=False --ExecutePreprocessor.record_timing=False "$nb"
      exit
    fi
    say "nbval $name.ipynb (capture server on 127.0.0.1:$port)"
    "$PY" -m pytest -p no:cacheprovider -q \
      --nbval --nbval-current-env --nbval-sanitize-with "$SANITIZE" \
      --nbval-cell-timeout 180 --nbval-kernel-startup-timeout 60 "$nb"
  )
  rc=$?
  set -e
  stop_server
  # Exit 5 means nothing was collected: a failure too.
  ((rc == 0)) || fail "nbval $name.ipynb (pytest exit $rc)"
  sent=$(count_mail "$dir")
  say "$name.ipynb: $sent message(s) arrived"
done

if ((UPDATE)); then say "outputs refreshed: review with git diff notebooks/"; exit 0; fi

# 2. papermill, as cron would run it: success delivers the report...
report=$ROOT/notebooks/scheduled_report.ipynb
dir=$WORK/papermill-ok
start_server "$dir"
say "papermill scheduled_report.ipynb -> capture server on 127.0.0.1:$port"
before=$(count_mail "$dir")
set +e
SMTP_HOST=127.0.0.1 SMTP_PORT=$port SMTP_SENDER=reports@example.org \
  XDG_DATA_HOME=$dir/data SMTP_MAGIC_CAPTURE_DIR=$dir/maildir \
  "$PY" -m papermill "$report" "$dir/report.ipynb" --cwd "$ROOT/notebooks" -k python3 \
  -p recipients "ops@example.org, finance@example.org" -p start "2024-03-01" -p end "2024-03-07" \
  --no-progress-bar --log-level WARNING
rc=$?
set -e
stop_server
((rc == 0)) || fail "papermill run of the scheduled report exited $rc"
after=$(count_mail "$dir")
((after == before + 1)) || fail "the scheduled report should deliver 1 message, $((after - before)) arrived"
"$PY" - "$dir/maildir" <<'EOF' || fail "the delivered report is not the expected message"
import sys
from smtp_magic.server import messages
(msg,) = messages(sys.argv[1])
assert "2024-03-01" in msg.subject and "2024-03-07" in msg.subject, msg.subject
assert set(msg.rcpt_to) == {"ops@example.org", "finance@example.org"}, msg.rcpt_to
assert any(p.get_filename() == "sales-2024-03-01-2024-03-07.csv" for p in msg.message.iter_attachments())
print(f"-- delivered: {msg.subject!r} to {', '.join(msg.rcpt_to)} ({msg.path.name})")
EOF

# ...and with nothing listening on the port, the run must fail (exit non-zero).
dir=$WORK/papermill-down
mkdir -p "$dir"
closed=$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1]); s.close()")
say "papermill scheduled_report.ipynb -> 127.0.0.1:$closed (nothing listening): must fail"
set +e
SMTP_HOST=127.0.0.1 SMTP_PORT=$closed SMTP_SENDER=reports@example.org XDG_DATA_HOME=$dir/data \
  "$PY" -m papermill "$report" "$dir/report.ipynb" --cwd "$ROOT/notebooks" -k python3 \
  -p recipients "ops@example.org" --no-progress-bar --log-level WARNING >"$dir/papermill.log" 2>&1
rc=$?
set -e
((rc != 0)) || fail "papermill exited 0 although the SMTP server was down"
grep -q "could not connect\|Could not connect\|connect" "$dir/papermill.log" \
  || { cat "$dir/papermill.log" >&2; fail "the failed run does not say why"; }
say "failed as it should (papermill exit $rc): $(grep -m1 -io '[^"]*connect[^"]*' "$dir/papermill.log" | head -c 200)"

say "notebooks: all passed"
