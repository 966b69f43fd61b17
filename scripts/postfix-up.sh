#!/usr/bin/env bash
# Start a private Postfix on 127.0.0.1 for the "real MTA" tests (Debian, as root, no systemd).
# Config, queue, data, log and mail all live under $PF; /etc/postfix and /var/spool/postfix are
# only read. Stop it with scripts/postfix-down.sh (same $PF).
#
#   PF=/tmp/smtp-magic-postfix bash scripts/postfix-up.sh
#
# Environment (all optional):
#   PF                    instance directory (default /tmp/smtp-magic-postfix)
#   P_SMTP P_SUB P_SMTPS  ports; free ports are picked for any left unset
#   PF_USER PF_PASS PF_REALM  SASL login (default testuser / testpass / example.test, so the
#                         login is testuser@example.test; the bare testuser works too)
# Listeners:
#   P_SMTP   plain SMTP, STARTTLS offered, AUTH only after STARTTLS, relays from 127.0.0.0/8
#   P_SUB    submission: STARTTLS and AUTH required
#   P_SMTPS  implicit TLS (wrapper mode), AUTH required
# Every recipient is delivered to the Maildir $PF/mail/sink/; nothing leaves the machine.
# Writes $PF/env (KEY=VALUE lines) for the tests: SMTP_MAGIC_POSTFIX_DIR, POSTFIX_SMTP_PORT,
# POSTFIX_SUB_PORT, POSTFIX_SMTPS_PORT, POSTFIX_CA (the certificate to trust), and with opendkim
# installed POSTFIX_DKIM_PORT (a listener whose mail OpenDKIM verifies) and POSTFIX_DKIM_KEYS.
# Needs: postfix sasl2-bin libsasl2-modules openssl util-linux (script), python3.
set -euo pipefail
PF=${PF:-/tmp/smtp-magic-postfix}
PF_USER=${PF_USER:-testuser}; PF_PASS=${PF_PASS:-testpass}; PF_REALM=${PF_REALM:-example.test}
PATH=$PATH:/usr/sbin:/sbin

die() { echo "postfix-up: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (postfix needs to chown its queue and data dirs)"
command -v postfix >/dev/null || die "postfix is not installed"
command -v saslpasswd2 >/dev/null || die "saslpasswd2 is missing (apt-get install sasl2-bin)"
pid=$(tr -d ' ' 2>/dev/null < "$PF/spool/pid/master.pid" || true)
if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
  die "an instance is already running in $PF (pid $pid); run scripts/postfix-down.sh first"
fi

if [ -z "${P_SMTP:-}" ] || [ -z "${P_SUB:-}" ] || [ -z "${P_SMTPS:-}" ]; then
  # Three distinct free ports: all bound at once, so the kernel cannot hand out one twice.
  read -r F1 F2 F3 < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
  P_SMTP=${P_SMTP:-$F1}; P_SUB=${P_SUB:-$F2}; P_SMTPS=${P_SMTPS:-$F3}
fi

mkdir -p "$PF"/{etc,spool,data,mail} "$PF/etc/sasl"
chmod 755 "$PF" "$PF/etc"
chown postfix:postfix "$PF/data"   # master.lock and TLS caches

# A self-signed certificate for localhost / 127.0.0.1, made now; it is also what clients trust.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$PF/etc/key.pem" -out "$PF/etc/cert.pem" 2>/dev/null
chmod 600 "$PF/etc/key.pem"

# Cyrus SASL with our own sasldb and smtpd.conf (cyrus_sasl_config_path), no saslauthd/Dovecot.
echo "$PF_PASS" | saslpasswd2 -p -c -f "$PF/etc/sasldb2" -u "$PF_REALM" "$PF_USER"
chown root:postfix "$PF/etc/sasldb2"; chmod 640 "$PF/etc/sasldb2"   # smtpd runs as postfix
cat > "$PF/etc/sasl/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
sasldb_path: $PF/etc/sasldb2
mech_list: PLAIN LOGIN
EOF

# virtual(8) refuses uids below 100, so the sink belongs to nobody, who must reach it: a PF under
# a mode-700 directory (mktemp -d) would make every delivery fail later, and only in the maillog.
chown -R 65534:65534 "$PF/mail"
if command -v setpriv >/dev/null \
   && ! setpriv --reuid=65534 --regid=65534 --clear-groups test -w "$PF/mail"; then
  die "user nobody cannot reach $PF/mail; give the directories above $PF mode o+x (e.g. chmod 755)"
fi

cat > "$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/spool
data_directory = $PF/data
meta_directory = /etc/postfix
# Postfix logs only to syslog (none here) unless told otherwise; the prefix list must allow $PF.
maillog_file = $PF/maillog
maillog_file_prefixes = $PF
myhostname = mx.example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# Every domain is "virtual" and maps to one Maildir: nothing is ever relayed out.
virtual_mailbox_domains = static:all
virtual_mailbox_maps = static:sink/
virtual_mailbox_base = $PF/mail
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
default_transport = error:no outbound mail in tests
relay_transport = error:no outbound mail in tests
alias_maps =
alias_database =
smtpd_banner = \$myhostname ESMTP test
message_size_limit = 52428800
# virtual(8) dies when its own limit is below message_size_limit.
virtual_mailbox_limit = 0
smtputf8_enable = yes
smtpd_tls_cert_file = $PF/etc/cert.pem
smtpd_tls_key_file = $PF/etc/key.pem
smtpd_tls_security_level = may
smtpd_tls_loglevel = 1
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $PF/etc/sasl
smtpd_sasl_local_domain = $PF_REALM
smtpd_sasl_auth_enable = yes
smtpd_tls_auth_only = yes
smtpd_sasl_security_options = noanonymous
smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination
# Strict about pipelining (RFC 2920): commands sent ahead where they may not be are refused.
smtpd_data_restrictions = reject_unauth_pipelining
EOF

# Our own master.cf: Debian's chroots smtpd into the queue dir, which would need /etc copies there.
cat > "$PF/etc/master.cf" <<EOF
127.0.0.1:$P_SMTP inet n - n - - smtpd
127.0.0.1:$P_SUB inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
127.0.0.1:$P_SMTPS inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF

# OpenDKIM as a verifying milter on a fourth listener (P_DKIM) only, so that the other listeners
# deliver messages unchanged: mail submitted there gets OpenDKIM's Authentication-Results header.
# Its public keys come from a file (TestPublicKeys), not DNS: $PF/opendkim/keys/ holds an RSA 2048
# and an Ed25519 key pair for example.test, selectors "rsa" and "ed", for the tests to sign with.
# Skipped (no POSTFIX_DKIM_PORT in $PF/env) when opendkim is not installed; a milter that is down
# makes that listener answer 4xx (milter_default_action = tempfail), never pass mail unchecked.
P_DKIM=
if command -v opendkim >/dev/null; then
  read -r P_DKIM P_MILTER < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
  DK=$PF/opendkim
  mkdir -p "$DK/keys"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$DK/keys/rsa.pem" 2>/dev/null
  openssl genpkey -algorithm ED25519 -out "$DK/keys/ed.pem" 2>/dev/null
  rsa_p=$(openssl pkey -in "$DK/keys/rsa.pem" -pubout -outform DER | base64 -w0)
  # An Ed25519 DKIM key (RFC 8463) is the raw 32-byte public key: the last 32 bytes of the DER.
  ed_p=$(openssl pkey -in "$DK/keys/ed.pem" -pubout -outform DER | tail -c 32 | base64 -w0)
  cat > "$DK/keys.txt" <<EOF
rsa._domainkey.example.test v=DKIM1; k=rsa; p=$rsa_p
ed._domainkey.example.test v=DKIM1; k=ed25519; p=$ed_p
EOF
  cat > "$DK/opendkim.conf" <<EOF
Mode v
Socket inet:$P_MILTER@127.0.0.1
PidFile $DK/opendkim.pid
UserID opendkim
Syslog no
AuthservID mx.example.test
AlwaysAddARHeader yes
TestPublicKeys $DK/keys.txt
MinimumKeyBits 1024
EOF
  chown -R opendkim "$DK"; chmod 755 "$DK" "$DK/keys"; chmod 644 "$DK"/keys/*.pem  # the tests sign with them
  opendkim -x "$DK/opendkim.conf"  # forks; its pid lands in $DK/opendkim.pid
  cat >> "$PF/etc/master.cf" <<EOF
127.0.0.1:$P_DKIM inet n - n - - smtpd
  -o syslog_name=postfix/dkim
  -o smtpd_milters=inet:127.0.0.1:$P_MILTER
  -o milter_default_action=tempfail
EOF
fi

# Postfix prints its errors only to syslog or a tty: script(1) gives it one, so CI logs show them.
script -qec "postfix -c $PF/etc check" /dev/null
script -qec "postfix -c $PF/etc start" /dev/null

cat > "$PF/env" <<EOF
SMTP_MAGIC_POSTFIX_DIR=$PF
POSTFIX_SMTP_PORT=$P_SMTP
POSTFIX_SUB_PORT=$P_SUB
POSTFIX_SMTPS_PORT=$P_SMTPS
POSTFIX_CA=$PF/etc/cert.pem
EOF
if [ -n "$P_DKIM" ]; then
  printf 'POSTFIX_DKIM_PORT=%s\nPOSTFIX_DKIM_KEYS=%s\n' "$P_DKIM" "$PF/opendkim/keys" >> "$PF/env"
fi

for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$P_SMTP") 2>/dev/null \
     && (exec 3<>"/dev/tcp/127.0.0.1/$P_SUB") 2>/dev/null \
     && (exec 3<>"/dev/tcp/127.0.0.1/$P_SMTPS") 2>/dev/null; then
    echo "postfix up in $PF: smtp $P_SMTP, submission $P_SUB, smtps $P_SMTPS (env: $PF/env)"
    exit 0
  fi
  sleep 0.1
done
echo "postfix did not come up; its log:" >&2
cat "$PF/maillog" >&2 || true
script -qec "postfix -c $PF/etc stop" /dev/null || true
exit 1
