#!/usr/bin/env bash
# Start a private Dovecot on 127.0.0.1 for the "real, independent server" tests (Debian, as root,
# no systemd): its submission service, with OAuth2 (passdb oauth2, JWTs checked locally) and
# passwords (passwd-file). Config, sockets, state, log, keys and mail all live under $DV;
# /etc/dovecot is never read. Stop it with scripts/dovecot-down.sh (same $DV).
#
#   DV=/tmp/smtp-magic-dovecot DV_RELAY_PORT=8025 bash scripts/dovecot-up.sh
#
# Environment:
#   DV                 instance directory (default /tmp/smtp-magic-dovecot); its parents need o+x
#   DV_RELAY_PORT      required: where submission relays accepted mail (an SMTP server on 127.0.0.1,
#                      e.g. smtp-magic's capture server); nothing leaves the machine
#   DV_PROTOCOLS       default "submission"; with "imap" (needs dovecot-imapd) also IMAP on
#                      P_IMAP (STARTTLS) and P_IMAPS (implicit TLS), a Sent folder created on
#                      first login, mail readable under $DV/mail/USER (Maildir)
#   P_SUB              the submission port (STARTTLS, AUTH required); a free port if unset
#   P_IMAP P_IMAPS     the IMAP ports when DV_PROTOCOLS has imap; free ports if unset
#   DV_USER DV_PASS    a password login (default testuser@example.test / testpass)
#   DV_EXTRA_USERS     more NAME:PASSWORD lines for passwd-file (one per line)
#   DV_JWT_KEY         base64 HS256 key that signs the accepted OAuth2 tokens; generated if unset
# Tokens: a JWT (header typ "JWT", alg HS256, no kid) signed with DV_JWT_KEY whose claims carry
# sub (Dovecot requires it), email (the login name: it must equal the SASL user), exp.
# Extending: every *.conf in $DV/etc/conf.d is included last; the script never empties that
# folder, so a caller writes e.g. an IMAP listener there first, then runs this script.
# Writes $DV/env (KEY=VALUE lines): DOVECOT_DIR, DOVECOT_SUBMISSION_PORT, DOVECOT_CA,
# DOVECOT_JWT_KEY, DOVECOT_USER, DOVECOT_PASS, DOVECOT_LOG (and DOVECOT_IMAP_PORT,
# DOVECOT_IMAPS_PORT with imap).
# Needs: dovecot-core dovecot-submissiond openssl python3 (dovecot-imapd for imap).
set -euo pipefail
DV=${DV:-/tmp/smtp-magic-dovecot}
DV_USER=${DV_USER:-testuser@example.test}; DV_PASS=${DV_PASS:-testpass}
DV_PROTOCOLS=${DV_PROTOCOLS:-submission}
PATH=$PATH:/usr/sbin:/sbin

die() { echo "dovecot-up: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (dovecot drops to its own users)"
command -v dovecot >/dev/null || die "dovecot is not installed (apt-get install dovecot-core dovecot-submissiond)"
[ -x /usr/lib/dovecot/submission ] || die "the submission service is missing (apt-get install dovecot-submissiond)"
[ -n "${DV_RELAY_PORT:-}" ] || die "DV_RELAY_PORT is not set (the SMTP server submission relays to)"
pid=$(tr -d ' ' 2>/dev/null < "$DV/run/master.pid" || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  die "an instance is already running in $DV (pid $pid); run scripts/dovecot-down.sh first"
fi
if [ -z "${P_SUB:-}" ]; then
  P_SUB=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
imap=""
case " $DV_PROTOCOLS " in *" imap "*)
  imap=1
  [ -x /usr/lib/dovecot/imap ] || die "the IMAP service is missing (apt-get install dovecot-imapd)"
  P_IMAP=${P_IMAP:-$(free_port)}; P_IMAPS=${P_IMAPS:-$(free_port)};;
esac
DV_JWT_KEY=${DV_JWT_KEY:-$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')}

mkdir -p "$DV"/{etc,etc/conf.d,run,state,home,mail} "$DV/etc/keys/default/HS256"
chmod 755 "$DV" "$DV/etc"
chown dovecot:dovecot "$DV/home" "$DV/mail"

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$DV/etc/key.pem" -out "$DV/etc/cert.pem" 2>/dev/null
chmod 600 "$DV/etc/key.pem"

# passdb oauth2, local validation: the key of a token without "kid" and "azp" is looked up as
# shared/default/HS256/default in the dict, i.e. the file keys/default/HS256/default (base64).
printf '%s' "$DV_JWT_KEY" > "$DV/etc/keys/default/HS256/default"
cat > "$DV/etc/oauth2.conf.ext" <<EOF
introspection_mode = local
local_validation_key_dict = fs:posix:prefix=$DV/etc/keys/
username_attribute = email
EOF
{
  printf '%s:{PLAIN}%s\n' "$DV_USER" "$DV_PASS"
  if [ -n "${DV_EXTRA_USERS:-}" ]; then
    while IFS= read -r line; do
      [ -n "$line" ] && printf '%s:{PLAIN}%s\n' "${line%%:*}" "${line#*:}"
    done <<< "$DV_EXTRA_USERS"
  fi
} > "$DV/etc/passwd"
chown root:dovecot "$DV/etc/passwd"; chmod 640 "$DV/etc/passwd"

cat > "$DV/etc/dovecot.conf" <<EOF
# Written by scripts/dovecot-up.sh; a private instance for the tests.
base_dir = $DV/run
state_dir = $DV/state
instance_name = smtp-magic-$(printf %s "$DV" | cksum | cut -d" " -f1)
log_path = $DV/dovecot.log
protocols = $DV_PROTOCOLS
listen = 127.0.0.1
hostname = mx.example.test
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = maildir:$DV/mail/%u
ssl = yes
ssl_cert = <$DV/etc/cert.pem
ssl_key = <$DV/etc/key.pem
disable_plaintext_auth = yes
auth_mechanisms = plain login xoauth2 oauthbearer
auth_verbose = yes
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $DV/etc/oauth2.conf.ext
}
passdb {
  driver = passwd-file
  mechanisms = plain login
  args = $DV/etc/passwd
}
userdb {
  driver = static
  args = uid=dovecot gid=dovecot home=$DV/home/%u
}
submission_relay_host = 127.0.0.1
submission_relay_port = $DV_RELAY_PORT
submission_relay_ssl = no
service submission-login {
  inet_listener submission {
    address = 127.0.0.1
    port = $P_SUB
  }
}
EOF
if [ -n "$imap" ]; then
  # IMAP for the save_sent tests: STARTTLS and implicit TLS, and a Sent folder (\Sent).
  cat >> "$DV/etc/dovecot.conf" <<EOF
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $P_IMAP
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $P_IMAPS
    ssl = yes
  }
}
namespace inbox {
  inbox = yes
  separator = /
  mailbox Sent {
    special_use = \\Sent
    auto = create
  }
}
EOF
fi
echo "!include_try $DV/etc/conf.d/*.conf" >> "$DV/etc/dovecot.conf"

# It daemonizes: its output must not hold the caller's pipes open (a test's capture_output).
if ! dovecot -c "$DV/etc/dovecot.conf" </dev/null >"$DV/startup.log" 2>&1; then
  cat "$DV/startup.log" >&2
  die "dovecot did not start"
fi

cat > "$DV/env" <<EOF
DOVECOT_DIR=$DV
DOVECOT_SUBMISSION_PORT=$P_SUB
DOVECOT_CA=$DV/etc/cert.pem
DOVECOT_JWT_KEY=$DV_JWT_KEY
DOVECOT_USER=$DV_USER
DOVECOT_PASS=$DV_PASS
DOVECOT_LOG=$DV/dovecot.log
EOF
if [ -n "$imap" ]; then
  printf 'DOVECOT_IMAP_PORT=%s\nDOVECOT_IMAPS_PORT=%s\n' "$P_IMAP" "$P_IMAPS" >> "$DV/env"
fi

for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$P_SUB") 2>/dev/null; then
    echo "dovecot up in $DV: submission $P_SUB${imap:+, IMAP $P_IMAP (STARTTLS) and $P_IMAPS (TLS)}, relaying to 127.0.0.1:$DV_RELAY_PORT (env: $DV/env)"
    exit 0
  fi
  sleep 0.1
done
echo "dovecot did not come up; its log:" >&2
cat "$DV/dovecot.log" >&2 || true
DV=$DV bash "$(dirname "$0")/dovecot-down.sh" >/dev/null 2>&1 || true
exit 1
