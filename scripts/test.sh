#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, start the servers, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VENV:-$ROOT/.venv}
WORK=$(mktemp -d /tmp/smtp-magic-test.XXXXXX)
chmod 755 "$WORK"  # Postfix delivers as nobody, who must reach the Maildir below
PF=$WORK/postfix

cleanup() {
  if [[ -f $PF/spool/pid/master.pid ]]; then PF=$PF bash scripts/postfix-down.sh >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }
# The aiosmtplib requirement as pyproject.toml pins it, e.g. "aiosmtplib>=3.0,<6".
aiosmtplib_pin() { grep -o '"aiosmtplib>=[^"]*"' pyproject.toml | tr -d '"'; }
# The tests of the wire (transport, composition, bulk engine, faults, timeouts): run again with
# every shortcut off and with the lowest supported aiosmtplib. Short on purpose.
WIRE_TESTS=(tests/test_pipelining.py tests/test_shortcuts.py tests/test_compose.py
  tests/test_compose_fast.py tests/test_api.py tests/test_faults.py tests/test_exit_codes.py
  tests/test_greeting.py tests/test_send_many_stream.py tests/test_outbox_journal.py
  tests/test_load.py tests/test_postfix.py tests/test_dovecot.py tests/test_sent_copy.py)
run_pytest() {  # like pytest, but exit 5 (nothing collected) is a failure too
  set +e
  "$@"
  local rc=$?
  set -e
  [[ $rc -eq 0 ]] || { echo "pytest failed (exit $rc): $*"; exit "$rc"; }
}

step "Debian packages"
need=()
command -v postfix >/dev/null || need+=(postfix)
command -v saslpasswd2 >/dev/null || need+=(sasl2-bin)
[[ -e /usr/lib/x86_64-linux-gnu/sasl2/libplain.so || -e /usr/lib/aarch64-linux-gnu/sasl2/libplain.so ]] || need+=(libsasl2-modules)
command -v chromium >/dev/null || need+=(chromium)
command -v openssl >/dev/null || need+=(openssl)
fc-list "DejaVu Sans" 2>/dev/null | grep -q . || need+=(fonts-dejavu-core)  # the status marks (tests/test_theme.py)
command -v node >/dev/null || need+=(nodejs)  # the OpenID Connect server of the OAuth2 tests
command -v npm >/dev/null || need+=(npm)
# OpenDKIM: postfix-up.sh runs it as a verifying milter (the DKIM tests' second verifier).
command -v opendkim >/dev/null || need+=(opendkim)
command -v opendkim-testmsg >/dev/null || need+=(opendkim-tools)
# Dovecot's submission service: an independent server for the sign-in tests (tests/test_dovecot.py).
[[ -x /usr/sbin/dovecot ]] || need+=(dovecot-core)
[[ -x /usr/lib/dovecot/submission ]] || need+=(dovecot-submissiond)
# Dovecot's IMAP: the Sent folder of the save_sent tests (tests/test_sent_copy.py).
[[ -x /usr/lib/dovecot/imap ]] || need+=(dovecot-imapd)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  # "No configuration": the system postfix must not start on :25; the tests run a private one.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  # No system service may start on install (Dovecot would listen on 143/587...): the tests run
  # private instances. policy-rc.d "101" forbids it, for this install only.
  policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
  [[ -z $policy ]] || rm -f "$policy"
fi
# Where systemd runs, the packaged Dovecot service stays off too.
if command -v systemctl >/dev/null && systemctl is-enabled dovecot >/dev/null 2>&1; then
  systemctl disable --now dovecot >/dev/null 2>&1 || true
fi

step "Python packages"
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -m pip install -q -e ".[test]" 2>&1 | grep -v "is ignored" || true
# The newest aiosmtplib of the supported range (pyproject.toml); the lowest is tested below.
"$VENV/bin/python" -m pip install -q --upgrade "$(aiosmtplib_pin)" 2>&1 | grep -v "is ignored" || true

# Keep the host's Jupyter and IPython configuration out of the tests.
export JUPYTER_CONFIG_DIR=$WORK/jupyter-config JUPYTER_DATA_DIR=$WORK/jupyter-data
export JUPYTER_RUNTIME_DIR=$WORK/jupyter-runtime IPYTHONDIR=$WORK/ipython
export XDG_DATA_HOME=$WORK/data XDG_CONFIG_HOME=$WORK/config  # outbox, profiles.json
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null

step "Private Postfix on 127.0.0.1"
PF=$PF bash scripts/postfix-up.sh
export SMTP_MAGIC_POSTFIX_ENV=$PF/env
# In CI a missing Postfix or browser is a failure, not a skip.
export SMTP_MAGIC_REQUIRE_POSTFIX=1 SMTP_MAGIC_REQUIRE_BROWSER=1

step "OpenID Connect server for the OAuth2 tests (npm ci in tests/oidc)"
(cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error)
# The tests start and stop it themselves (tests/idp.py); in CI a missing one fails them.
export SMTP_MAGIC_REQUIRE_OIDC=1
# Dovecot: the tests start and stop a private one (tests/conftest.py `dovecot`,
# scripts/dovecot-up.sh); in CI a missing Dovecot fails them instead of skipping.
export SMTP_MAGIC_REQUIRE_DOVECOT=1

step "lint, types and layering (ruff, mypy, import-linter)"
"$VENV/bin/ruff" check smtp_magic tests
"$VENV/bin/mypy" smtp_magic
"$VENV/bin/lint-imports"  # the layering the README describes (pyproject.toml [tool.importlinter])

step "notebooks (nbval against the capture server)"
bash scripts/test-notebooks.sh "$VENV"

step "the package: sdist and wheel, a fresh venv with the wheel, smtp-magic demo from it"
bash scripts/test-package.sh "$VENV"

step "pytest"
run_pytest "$VENV/bin/python" -m pytest -p no:cacheprovider -q -ra tests

step "pytest, wire tests with every shortcut off (SMTP_MAGIC_NO_SHORTCUTS=1: EmailMessage + aiosmtplib's sendmail)"
SMTP_MAGIC_NO_SHORTCUTS=1 run_pytest "$VENV/bin/python" -m pytest -p no:cacheprovider -q -ra "${WIRE_TESTS[@]}"

# A second venv with only the lowest supported aiosmtplib; everything else comes from the main
# venv (a .pth that adds its site-packages after this venv's own).
low=$(aiosmtplib_pin | sed -E 's/.*>=([0-9.]+).*/\1/')
step "pytest, wire tests with the lowest supported aiosmtplib ($low)"
LOW_VENV=$WORK/venv-aiosmtplib-$low
python3 -m venv "$LOW_VENV"
"$LOW_VENV/bin/python" -m pip install -q "aiosmtplib==$low" 2>&1 | grep -v "is ignored" || true
main_site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
low_site=$("$LOW_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$main_site')" > "$low_site/zz-smtp-magic-main-venv.pth"
"$LOW_VENV/bin/python" -c "import aiosmtplib, sys; v = aiosmtplib.__version__; print('aiosmtplib', v); sys.exit(v != '$low')"
run_pytest "$LOW_VENV/bin/python" -m pytest -p no:cacheprovider -q -ra "${WIRE_TESTS[@]}"
