#!/usr/bin/env bash
# Stop the private Dovecot started by scripts/dovecot-up.sh (only that instance, found by $DV).
#   DV=/tmp/smtp-magic-dovecot bash scripts/dovecot-down.sh [--purge]    (--purge: then delete $DV)
set -uo pipefail
DV=${DV:-/tmp/smtp-magic-dovecot}
pid=$(tr -d ' ' 2>/dev/null < "$DV/run/master.pid" || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "dovecot-down: master $pid still running after 10 s" >&2
    exit 1
  fi
fi
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$DV"
fi
echo "dovecot stopped ($DV)"
