#!/usr/bin/env bash
# Stop the private Postfix started by scripts/postfix-up.sh (only that instance, found by $PF).
#   PF=/tmp/smtp-magic-postfix bash scripts/postfix-down.sh [--purge]    (--purge: then delete $PF)
set -uo pipefail
PF=${PF:-/tmp/smtp-magic-postfix}
PATH=$PATH:/usr/sbin:/sbin
pid=$(tr -d ' ' 2>/dev/null < "$PF/spool/pid/master.pid" || true)
if [ -f "$PF/etc/main.cf" ]; then
  script -qec "postfix -c $PF/etc stop" /dev/null >/dev/null 2>&1 || true
fi
# The OpenDKIM milter postfix-up.sh started, by its pid file.
dkpid=$(tr -d ' ' 2>/dev/null < "$PF/opendkim/opendkim.pid" || true)
if [ -n "$dkpid" ] && kill -0 "$dkpid" 2>/dev/null; then
  kill "$dkpid" 2>/dev/null || true
  for _ in $(seq 1 50); do  # it takes a second to exit
    kill -0 "$dkpid" 2>/dev/null || break
    sleep 0.1
  done
fi
# `postfix stop` returns at once while the master takes ~2 s to exit: wait, so that the ports are
# free and $PF can be deleted afterwards.
for _ in $(seq 1 100); do
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  echo "postfix-down: master $pid still running after 10 s" >&2
  exit 1
fi
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$PF"
fi
echo "postfix stopped ($PF)"
