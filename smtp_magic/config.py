"""The settings: one traitlets Configurable (``SmtpMagic``) read by every front end."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import reprlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from traitlets import (
    Bool,
    Callable,
    Enum,
    Float,
    Int,
    TraitError,
    TraitType,
    Unicode,
    observe,
    validate,
)
from traitlets.config import Config, Configurable

# The sources' names (ASSIGNED, DEFAULT, MAGIC...) stay reachable here for the front ends.
from ._provenance import (  # noqa: F401
    ASSIGNED,
    DEFAULT,
    IPYTHON_CONFIG,
    LOCAL,
    MAGIC,
    LocalSwitch,
    LoginBinding,
    Provenance,
)
from ._provenance import QUIET as _QUIET
from .errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from .profiles import ProfileChoice

__all__ = [
    "SETTINGS",
    "ConnectionSettings",
    "Secret",
    "SmtpMagic",
    "Withheld",
    "current",
    "load_json",
    "normalize_keys",
]

log = logging.getLogger(__name__)

MASK = "********"
MB = 1024 * 1024  # the unit of attachment_size

# The sender --local uses when the username is not an address.
LOCAL_SENDER = "notebook@localhost.test"
# Microsoft Graph's base URL (transport graph).
GRAPH_ENDPOINT = "https://graph.microsoft.com/v1.0"


class Secret:
    """A password that never shows itself: repr/str are masked; ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = str(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            return self._value == other._value
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> Any:
        # Pickling would write the value in clear (e.g. into a cache or a queue file).
        raise TypeError("a Secret cannot be pickled")


class Withheld(Secret):
    """No password for this server: the one set was given for another (``given_for``, e.g.
    ``alice at smtp.a.example:587``) and is never sent elsewhere, like a browser keeps a
    password to its origin. False, as no password is; ``message(settings)`` says what to do."""

    __slots__ = ("given_for", "how")

    def __init__(self, given_for: str, how: str = "--password-prompt") -> None:
        super().__init__("")
        self.given_for, self.how = given_for, how

    def __repr__(self) -> str:
        return f"Withheld(given_for={self.given_for!r})"

    def __str__(self) -> str:
        return f"(given for {self.given_for}; give it again for this server)"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Withheld):
            return self.given_for == other.given_for
        return False if isinstance(other, Secret) else NotImplemented

    def __hash__(self) -> int:
        return hash(("Withheld", self.given_for))

    def message(self, settings: Any) -> str:
        """One sentence for the user: where the password belonged and how to give it again."""
        here = login_origin(settings.host, settings.port, settings.username,
                            getattr(settings, "imap_host", None))
        return (f"The password was given for {self.given_for}, so it is not sent to {here}: "
                f"give the password again for this server (e.g. %smtp_config {self.how}, or "
                "\"password\" in the request).")


def withheld_password(settings: Any) -> Withheld | None:
    """The withheld password when it is the one a login would use (a username, auth by
    password, no password_env or keyring to read another from), else None."""
    password = settings.password
    if (isinstance(password, Withheld) and settings.username and settings.auth == "password"
            and not settings.password_env and not settings.use_keyring):
        return password
    return None


def login_origin(host: str, port: int, username: str | None, imap_host: str | None = None) -> str:
    """``alice at smtp.example.org:587``: the server (and login) a password belongs to; with
    `` (and IMAP imap.example.org)`` when save_sent signs in at another host too."""
    where = f"{username} at {host}:{port}" if username else f"{host}:{port}"
    return where + (f" (and IMAP {imap_host})" if imap_host and imap_host != host else "")


class SecretTrait(TraitType[Secret | None, Secret | str | None]):
    """Accepts a str (or Secret) and stores a Secret, so ``%config SmtpMagic`` shows it masked."""

    default_value = None
    info_text = "a password (never shown)"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_value=None, allow_none=True, **kwargs)

    def validate(self, obj: Any, value: Any) -> Secret | None:
        if value is None or isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return Secret(value) if value else None
        self.error(obj, value)


SECURITY_MODES = ("auto", "starttls", "tls", "none")
CONTENT_TYPES = ("text/html", "text/plain", "text/markdown", "multipart/alternative")

# The connector's JSON names (``target``, ``user``...) and other spellings users reach for,
# mapped to trait names.
ALIASES = {
    "target": "host",
    "hostname": "host",
    "server": "host",
    "user": "username",
    "from": "sender",
    "content-type": "content_type",
    "contenttype": "content_type",
    "ssl": "security",
}

# Environment variables read when the settings are created.
ENV_VARS = {
    "SMTP_HOST": "host",
    "SMTP_PORT": "port",
    "SMTP_USERNAME": "username",
    "SMTP_PASSWORD": "password",
    "SMTP_SECURITY": "security",
    "SMTP_SENDER": "sender",
}


class SmtpMagic(Configurable):
    """Connection settings shared by the magics, the compose form, the Python API and the CLI.

    Sources, later wins: trait defaults < IPython config (``c.SmtpMagic.port = 587``) <
    environment (``SMTP_HOST`` ...) < a JSON file < ``%smtp_config`` options < options of one send.

    Every trait tagged ``config=True`` is a setting: it is in ``%config SmtpMagic``, in every
    snapshot (``ConnectionSettings``), in ``%smtp_config``'s table (in declaration order) and
    options (``--name``, or the ``option`` tag; ``option=False`` for none), and accepted as a
    JSON key and as a per-request override. A new setting is one trait here.

    Each setting also knows where its value came from (``source(name)``, the "from" column of
    ``%smtp_config``; kept by ``provenance``). Settings chosen by ``--local`` (``use_local``)
    last only while the settings point at the capture server: changing the host or port
    restores what they were (kept by ``local``; see ``smtp_magic._provenance``).
    """

    host = Unicode("localhost", help="SMTP server host name or IP address.").tag(config=True)
    port = Int(25, help="TCP port (25, 587 for STARTTLS, 465 for implicit TLS).").tag(
        config=True, metavar="N")
    security = Enum(
        SECURITY_MODES, "auto",
        help="auto (465: implicit TLS, else STARTTLS when offered), starttls, tls or none.",
    ).tag(config=True)
    username = Unicode(None, allow_none=True, help="Login; also the default sender.").tag(
        config=True)
    password = SecretTrait(help="Password; never shown, logged or saved.").tag(
        config=True, option=False, profile=False)
    password_env = Unicode(
        None, allow_none=True,
        help="Name of an environment variable holding the password, read at send time.",
    ).tag(config=True, metavar="VAR")
    use_keyring = Bool(
        False, help="Read the password from the system keyring (service 'smtp-magic'); with "
        "--password-prompt, save the typed password there."
    ).tag(config=True, option="--keyring")
    sender = Unicode(None, allow_none=True, help="Default From address.").tag(
        config=True, option="--from", metavar="ADDR")
    validate_certs = Bool(True, help="Verify the server's TLS certificate.").tag(config=True)
    cafile = Unicode(
        None, allow_none=True, help="Extra CA bundle (PEM) for a private certificate authority."
    ).tag(config=True, metavar="PATH")
    allow_plaintext_auth = Bool(
        False, help="Allow sending credentials over an unencrypted connection."
    ).tag(config=True)
    timeout = Float(
        30.0, help="Seconds one send may take, from connecting to the final reply, retries included."
    ).tag(config=True, metavar="S")
    attempts = Int(3, help="Attempts in all for a temporary failure (first + retries).").tag(
        config=True, metavar="N")
    connections = Int(4, help="Connections used in parallel by bulk sends.").tag(
        config=True, metavar="N")
    attachment_size = Float(10.0, help="Largest attachment in MB (at most 10).").tag(
        config=True, metavar="MB")
    content_type = Enum(CONTENT_TYPES, "text/html", help="Default body type.").tag(config=True)
    send_mode = Enum(
        ("auto", "async", "sync"), "auto",
        help="How %%smtp_send waits: async returns at once, sync blocks; auto blocks only in "
        "headless runs (papermill, nbval, nbconvert).",
    ).tag(config=True, profile=False)
    outbox_dir = Unicode(
        None, allow_none=True,
        help="Where undelivered messages are kept (default: $XDG_DATA_HOME/smtp_magic/outbox).",
    ).tag(config=True, metavar="PATH", profile=False)
    # -- OAuth2 sign-in (XOAUTH2 / OAUTHBEARER); see smtp_magic.oauth --
    auth = Enum(
        ("password", "oauth2", "none"), "password",
        help="How to log in: password, oauth2 (a bearer token from oauth2_provider), or none "
        "(never log in; the username is then only the default sender).",
    ).tag(config=True)
    oauth2_provider = Unicode(
        None, allow_none=True,
        help="microsoft, google, an OpenID Connect issuer URL, or command. Setting it also sets "
        "auth to oauth2 and, for microsoft and google, host, port and security unless given.",
    ).tag(config=True, metavar="NAME|URL")
    oauth2_client_id = Unicode(
        None, allow_none=True,
        help="Client id of your app registration (Google: or the path of its client JSON file).",
    ).tag(config=True, metavar="ID")
    oauth2_tenant = Unicode(
        None, allow_none=True,
        help="Microsoft tenant id or domain (default 'common'), or a full authority URL.",
    ).tag(config=True, metavar="TENANT")
    oauth2_scopes = Unicode(
        None, allow_none=True,
        help="Space-separated scopes (default: Microsoft 'https://outlook.office.com/SMTP.Send "
        "offline_access', with transport graph 'https://graph.microsoft.com/Mail.Send "
        "offline_access', Google 'https://mail.google.com/', other issuers 'openid email "
        "offline_access').",
    ).tag(config=True, metavar="SCOPES")
    oauth2_token_command = Unicode(
        None, allow_none=True,
        help="A program whose standard output is an access token (like msmtp's passwordeval); "
        "used instead of signing in when set. Setting it also sets auth to oauth2.",
    ).tag(config=True, metavar="CMD")
    oauth2_token_provider = Callable(
        None, allow_none=True,
        help="A Python callable returning an access token (Python API, ipython_config.py); "
        "used instead of signing in when set.",
    ).tag(config=True, option=False, profile=False)

    rate = Unicode(
        None, allow_none=True,
        help="Pace of bulk sends, e.g. '30/min' (Microsoft 365) or '14/s' (Amazon SES): messages "
        "per s, min, hour or day, evenly spaced. Unset: as fast as the server allows.",
    ).tag(config=True, metavar="RATE")
    debug = Bool(
        False, help="Show the SMTP conversation of every send (logins redacted) on standard "
        "error, or in the cell's output in a notebook."
    ).tag(config=True, profile=False)
    profile = Unicode(
        None, allow_none=True,
        help="A named set of settings (no password) from profiles.json in the user's config "
        "folder; choosing one replaces the connection settings. With --save: save the current "
        "settings under this name.",
    ).tag(config=True, metavar="NAME", profile=False)
    # -- deliverability: DKIM signing and one-click unsubscribe (smtp_magic._dkim) --
    dkim_domain = Unicode(
        None, allow_none=True,
        help="Sign every message with DKIM for this domain (d=); the From address's domain must "
        "be it or a subdomain of it.",
    ).tag(config=True, metavar="DOMAIN")
    dkim_selector = Unicode(
        None, allow_none=True,
        help="The DKIM selector (s=): the public key is published at SELECTOR._domainkey.DOMAIN.",
    ).tag(config=True, metavar="NAME")
    dkim_key = Unicode(
        None, allow_none=True,
        help="The DKIM private key: path of a PEM file (RSA of at least 1024 bits, or Ed25519), "
        "or 'keyring' for the keyring entry dkim:SELECTOR._domainkey.DOMAIN.",
    ).tag(config=True, metavar="PATH")
    dkim_headers = Unicode(
        "From, To, Cc, Reply-To, Subject, Date, Message-ID, MIME-Version, Content-Type, "
        "List-Unsubscribe, List-Unsubscribe-Post",
        help="The headers DKIM signs (those present in the message), comma-separated.",
    ).tag(config=True, metavar="NAMES")
    unsubscribe_mailto = Unicode(
        None, allow_none=True,
        help="An address for unsubscribe requests by email: adds <mailto:ADDR> to "
        "List-Unsubscribe.",
    ).tag(config=True, metavar="ADDR")
    # -- a copy in Sent (IMAP APPEND, smtp_magic.imap) and Reply-To --
    save_sent = Unicode(
        None, allow_none=True,
        help="After a send the SMTP server accepted, store the exact message in this IMAP folder "
        "(e.g. Sent), flagged \\Seen, at imap_host with the same login. Leave it unset for Gmail "
        "and Outlook, which file sent mail themselves.",
    ).tag(config=True, metavar="FOLDER")
    imap_host = Unicode(
        None, allow_none=True,
        help="The IMAP server of save_sent (same username and password or OAuth2 token as SMTP; "
        "a password given before imap_host changes is withheld from it until given again).",
    ).tag(config=True, metavar="HOST")
    imap_port = Int(993, help="The IMAP port (993 implicit TLS, 143 STARTTLS).").tag(
        config=True, metavar="N")
    imap_security = Enum(
        ("tls", "starttls", "none"), "tls",
        help="IMAP encryption: tls (implicit), starttls or none (no login without "
        "allow_plaintext_auth).",
    ).tag(config=True)
    reply_to = Unicode(
        None, allow_none=True, help="Default Reply-To address(es); a request's reply_to wins.",
    ).tag(config=True, metavar="ADDR")
    # -- Microsoft Graph sendMail instead of SMTP (smtp_magic.graph) --
    transport = Enum(
        ("smtp", "graph"), "smtp",
        help="How messages leave: smtp (the server at host and port), or graph (Microsoft Graph "
        "sendMail at graph_endpoint, signed in with oauth2_provider microsoft; for Microsoft 365 "
        "tenants that keep SMTP AUTH off).",
    ).tag(config=True)
    graph_endpoint = Unicode(
        GRAPH_ENDPOINT,
        help="The Microsoft Graph base URL of transport graph (https; a national cloud's, or a "
        "test server's trusted with cafile).",
    ).tag(config=True, metavar="URL")

    _quiet = False  # while copying settings: choosing `profile` must not load the profile again

    def __init__(self, **kwargs: Any) -> None:
        self.provenance = Provenance()  # where each value came from (``source``)
        self.local = LocalSwitch()  # what --local replaced (``use_local``)
        self._batch: set[str] | None = None  # the names given in the update() under way
        self._leaving = False  # the host or port changed during that update
        self._moved = False  # the host, port or username changed during that update
        # The server the password (or password_env) was given for: a change of the host, port,
        # username or IMAP host withholds it (``_guard_login``).
        self.login = LoginBinding()
        # What choosing a profile sets and what saving one writes (``update``, ``--save``).
        self.profiles = _profile_choice(self)
        self.observe(self._on_change, names=list(self.trait_names(config=True)))
        super().__init__(**kwargs)
        self._mark_config(self.config)

    @validate("port")
    def _check_port(self, proposal: Any) -> int:
        value = proposal["value"]
        if not 1 <= value <= 65535:
            raise TraitError(f"port must be between 1 and 65535, not {value}.")
        return value

    @validate("timeout")
    def _check_timeout(self, proposal: Any) -> float:
        if proposal["value"] <= 0:
            raise TraitError(f"timeout must be more than 0 seconds, not {proposal['value']}.")
        return proposal["value"]

    @validate("attachment_size")
    def _check_attachment_size(self, proposal: Any) -> float:
        value = proposal["value"]
        if not 0 < value <= 10:
            raise TraitError(f"attachment_size must be more than 0 and at most 10 MB, not {value}.")
        return value

    @validate("attempts", "connections")
    def _check_positive(self, proposal: Any) -> int:
        if proposal["value"] < 1:
            name = proposal["trait"].name
            raise TraitError(f"{name} must be at least 1, not {proposal['value']}.")
        return proposal["value"]

    @validate("oauth2_provider")
    def _check_oauth2_provider(self, proposal: Any) -> str | None:
        value = proposal["value"]
        if value is None or not value.strip():
            return None
        value = value.strip()
        if value.lower() in ("microsoft", "google", "command"):
            return value.lower()
        if value.startswith(("https://", "http://127.0.0.1", "http://localhost", "http://[::1]")):
            return value.rstrip("/")
        raise TraitError("expected microsoft, google, command or an OpenID Connect issuer URL "
                         "(https://...)")

    @validate("rate")
    def _check_rate(self, proposal: Any) -> str | None:
        value = proposal["value"]
        if value is None or not value.strip():
            return None
        from .pacing import parse_rate

        try:
            parse_rate(value)
        except ValueError as exc:
            raise TraitError(f"{exc}.") from None
        return " ".join(value.split())

    @validate("profile")
    def _check_profile(self, proposal: Any) -> str | None:
        value = proposal["value"]
        if value is None or not value.strip():
            return None
        from .profiles import check_name

        return check_name(value.strip())  # type: ignore[no-any-return]

    @observe("profile")
    def _profile_chosen(self, change: Any) -> None:
        """Setting the trait directly (``%config SmtpMagic.profile = 'work'``, ``c.SmtpMagic``)
        applies the profile, as ``update`` does. The profile is read here, not in the validator
        (which reads no file): an unknown one puts the name back and raises, so nothing changed."""
        if self._quiet or not change["new"]:
            return
        try:
            values = self.profiles.values(change["new"], previous=change["old"])
        except ConfigError as exc:
            self._quiet = True
            try:
                with self.provenance.setting_from(_QUIET):
                    self.set_trait("profile", change["old"])
            finally:
                self._quiet = False
            raise TraitError(str(exc)) from None
        self.update(values, source=f"profile {change['new']!r}", apply_profile=False)

    @validate("dkim_domain", "dkim_selector")
    def _check_dkim_name(self, proposal: Any) -> str | None:
        value = proposal["value"]
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip(".")
        # DNS labels (a selector may have dots too); Unicode domains are IDNA-encoded later.
        if not re.fullmatch(r"(?!-)[\w-]{1,63}(?:\.(?!-)[\w-]{1,63})*", value):
            raise TraitError(f"{value!r} is not a domain name" if proposal["trait"].name ==
                             "dkim_domain" else f"{value!r} is not a DNS label (letters, digits, "
                             "'-', '_', '.')")
        return value

    @validate("dkim_headers")
    def _check_dkim_headers(self, proposal: Any) -> str:
        names = [n for n in re.split(r"[,:\s]+", proposal["value"]) if n]
        bad = [n for n in names if not re.fullmatch(r"[!-9;-~]+", n)
               or n.lower() in ("bcc", "dkim-signature", "return-path", "received")]
        if bad:
            raise TraitError(f"{bad[0]!r} cannot be signed")
        if "from" not in {n.lower() for n in names}:
            raise TraitError("From must be signed (RFC 6376)")
        return ", ".join(names)

    @validate("imap_host")
    def _check_imap_host(self, proposal: Any) -> str | None:
        value = proposal["value"]
        if value is None or not value.strip():
            return None
        if any(c.isspace() or c in "\0/" for c in value.strip()):
            raise TraitError(f"imap_host {value!r} is not a host name or IP address.")
        return str(value.strip())

    @validate("graph_endpoint")
    def _check_graph_endpoint(self, proposal: Any) -> str:
        from urllib.parse import urlsplit

        value = (proposal["value"] or "").strip() or GRAPH_ENDPOINT
        parts = urlsplit(value)
        if parts.scheme.lower() != "https" or not parts.hostname or parts.query or \
                parts.fragment or parts.username or any(c.isspace() for c in value):
            raise TraitError(f"expected an https:// URL like {GRAPH_ENDPOINT!r}")
        return value.rstrip("/")

    @validate("host")
    def _check_host(self, proposal: Any) -> str:
        value = proposal["value"].strip()
        if not value or any(c.isspace() or c in "\0/" for c in value):
            raise TraitError(f"host {proposal['value']!r} is not a host name or IP address.")
        return value

    # -- sources -------------------------------------------------------------------------------

    def load_env(self, environ: Mapping[str, str] | None = None) -> SmtpMagic:
        """Apply the SMTP_* environment variables that are set."""
        environ = os.environ if environ is None else environ
        found = {var: trait for var, trait in ENV_VARS.items() if environ.get(var)}
        self.update({trait: environ[var] for var, trait in found.items()}, source="environment")
        for var, trait in found.items():
            self.provenance.record(trait, f"environment ({var})")
        if "SMTP_PASSWORD" in found:
            # SMTP_PASSWORD belongs to the server the environment names; what it leaves out
            # (no SMTP_PORT, say) is fixed by the first value chosen (--port, a --file, a
            # profile), and the password withheld from any other after that.
            self._bind_login(i for i, var in enumerate(("SMTP_HOST", "SMTP_PORT", "SMTP_USERNAME"))
                             if var not in found)
        return self

    def load_file(self, path: str | os.PathLike[str]) -> SmtpMagic:
        """Apply a JSON file in the connector's format (``target``, ``port``...) or with trait names."""
        log.debug("settings from %s", path)
        return self.update(load_json(path), source=str(path), origin=f"file {path}")

    def update(self, values: Mapping[str, Any], *, source: str = "settings",
               origin: str | None = None, apply_profile: bool = True) -> SmtpMagic:
        """Set several settings at once, all or nothing; errors name the key and the source.

        ``origin`` is where the values come from as ``source(name)`` tells it (default: ``source``).
        A ``profile`` among them is applied first (see ``ProfileChoice.values``), so the other
        values given with it win; ``apply_profile=False`` only records the name.
        """
        normalized = normalize_keys(values, source=source)
        if apply_profile and normalized.get("profile"):
            name = str(normalized["profile"]).strip()
            log.info("profile %r chosen in %s", name, source)
            normalized = {**self.profiles.values(name, previous=self.profile), **normalized,
                          "profile": name}
        # The password source given last wins (as with %smtp_config): a typed password never
        # stays behind a new password_env or keyring, to be sent instead of it.
        if normalized.get("password_env") and "password" not in normalized:
            normalized["password"] = None
        if normalized.get("use_keyring") is True and "password" not in normalized:
            normalized["password"] = None
        staged = self.copy()
        staged._quiet = True
        with staged._given(normalized):
            for key, value in normalized.items():
                try:
                    setattr(staged, key, _coerce(staged, key, value))
                except (TraitError, ValueError, TypeError) as exc:
                    raise ConfigError(_trait_message(key, value, exc, source)) from None
            implied = _oauth2_presets(staged, normalized)
        origin = origin or source
        self._quiet = True
        try:
            with self.provenance.setting_from(origin), self._given(normalized):
                for key in normalized:
                    setattr(self, key, getattr(staged, key))
                    self.provenance.record(key, origin)  # also when the value stayed the same
                for key in implied:  # what choosing an OAuth2 provider implied
                    if key not in normalized and getattr(self, key) != getattr(staged, key):
                        setattr(self, key, getattr(staged, key))
                        self.provenance.record(key, origin)
        finally:
            self._quiet = False
        return self

    def set_keeping(self, name: str, value: Any, keep: Iterable[str]) -> None:
        """``setattr(self, name, value)`` as one change with the settings ``keep`` given too, at
        their current values: they stay what the user sees (the form's Port keeps the Host
        shown beside it when it leaves the capture server). Raises what ``setattr`` raises."""
        with self._given({name, *keep}):
            setattr(self, name, value)

    @contextlib.contextmanager
    def _given(self, names: Iterable[str]) -> Iterator[None]:
        """Set several settings as one change: leaving the capture server (``use_local``) is
        decided once they are all set, and what was given is never replaced by what --local
        had replaced."""
        outer = self._batch, self._leaving, self._moved
        self._batch, self._leaving, self._moved = set(names), False, False
        try:
            yield
        finally:
            given, leaving, moved = self._batch, self._leaving, self._moved
            self._batch, self._leaving, self._moved = outer
        if leaving:
            self.local.leave(self, given)
        if ("password" in given and self.password) or (
                "password_env" in given and self.password_env):
            self._bind_login()  # given now: for the server set now
        elif moved or leaving:
            self._guard_login()

    def update_config(self, config: Config) -> None:
        """Apply IPython config (``%config SmtpMagic.port = 587``), noting where values came from."""
        with self.provenance.setting_from(IPYTHON_CONFIG):
            super().update_config(config)
        self._mark_config(config)

    def _mark_config(self, config: Config) -> None:
        section = config.get(type(self).__name__) if isinstance(config, dict) else None
        self.provenance.mark_config(section, SETTINGS)

    def use_local(self, host: str, port: int) -> SmtpMagic:
        """Point at the capture server at ``host:port``: no TLS, no login (auth none), a stand-in sender
        when the username is not an address. What these settings were before comes back as soon
        as the host or port changes again."""
        self.local.enter(self, host, port, sender=LOCAL_SENDER)
        return self

    def source(self, name: str) -> str:
        """Where the current value of setting ``name`` came from (``default``, ``IPython
        config``, ``environment (SMTP_HOST)``, ``file PATH``, ``%smtp_config``, ``--local``...)."""
        if name not in SETTINGS:
            raise KeyError(name)
        return self.provenance.get(name)

    def apply(self, other: SmtpMagic) -> SmtpMagic:
        """Take every setting of ``other``, with where it came from (ends a staged change)."""
        quiet, self._quiet = self._quiet, True  # other's profile is applied already
        try:
            with self.provenance.setting_from(_QUIET):
                for name in SETTINGS:
                    if getattr(self, name) != getattr(other, name):
                        setattr(self, name, getattr(other, name))
        finally:
            self._quiet = quiet
        self.provenance.copy_from(other.provenance)
        self.local.before = dict(other.local.before)
        self.login.copy_from(other.login)
        return self

    def copy(self) -> SmtpMagic:
        clone = SmtpMagic()
        clone._quiet = True  # copying the profile's name must not load the profile again
        try:
            clone.apply(self)
        finally:
            clone._quiet = False
        return clone

    def _on_change(self, change: Any) -> None:
        name = change["name"]
        source = self.provenance.changed(name)
        if source is _QUIET:
            return
        if name in ("host", "port") and self.local and source != LOCAL:
            if self._batch is not None:
                self._leaving = True  # decided when the whole change is in (``_given``)
            else:
                self.local.leave(self, {name})
        if self._batch is not None:  # the password is bound or withheld when all is in
            self._moved = self._moved or name in ("host", "port", "username", "imap_host")
            return
        if name in ("password", "password_env"):
            if self._has_login_secret():
                self._bind_login()
        elif name in ("host", "port", "username", "imap_host"):
            self._guard_login()

    def _login_origin(self) -> tuple[str, int, str | None, str | None]:
        # An IMAP server on the SMTP host itself is no other place for the password to go.
        imap = self.imap_host if self.imap_host != self.host else None
        return (self.host, self.port, self.username, imap)

    def _bind_login(self, open_: Iterable[int] = ()) -> None:
        self.login.bind(self._login_origin(), open_)

    def _has_login_secret(self) -> bool:
        return bool(self.password) or bool(self.password_env)

    def _guard_login(self) -> None:
        """Withhold the password when the server or login is no longer the one it was given
        for: it is dropped (``Withheld``) until given again, never sent to another server."""
        if not self._has_login_secret():
            return  # keep the binding: a password --local put aside may come back
        bound = self.login.moved(self._login_origin())
        if bound is None:
            return
        how = (f"--password-env {self.password_env}" if self.password_env and not self.password
               else "--password-prompt")
        withheld = Withheld(login_origin(*bound), how)
        log.info("the password given for %s is withheld from %s", withheld.given_for,
                 login_origin(*self._login_origin()))
        with self.provenance.setting_from(_QUIET):
            self.password = withheld
            self.password_env = None
        self.login.forget()

    def left_local(self) -> list[str]:
        """The settings that leaving the capture server gave back a different value (since this
        object was made or copied), e.g. ``security`` after ``--local`` then ``--host``."""
        return [name for name in self.local.given_back(self)
                if not isinstance(getattr(self, name), Withheld)]  # not back: withheld

    @classmethod
    def from_ipython_config(cls, cfg: Any) -> SmtpMagic:
        """Settings from an IPython config (``c.SmtpMagic.*``); see ``load_ipython_config``."""
        settings = cls(config=cfg)
        settings.profiles.config_over_profile(cfg, SETTINGS)
        return settings

    def load_ipython_config(self, cfg: Any) -> SmtpMagic:
        """Apply ``c.SmtpMagic.*`` from an IPython config. A ``profile`` there is applied first,
        so the other ``c.SmtpMagic`` values of the same config win over it."""
        self.update_config(cfg)  # traitlets: applies c.SmtpMagic.profile through the observer
        self.profiles.config_over_profile(cfg, SETTINGS)
        return self

    # -- snapshots and display -----------------------------------------------------------------

    def snapshot(self, overrides: Mapping[str, Any] | None = None) -> ConnectionSettings:
        """Frozen settings for one send; ``overrides`` (connector or trait names) apply to it only."""
        source = self.copy().update(overrides, source="request") if overrides else self
        return ConnectionSettings({name: getattr(source, name) for name in SETTINGS})

    def describe(self) -> list[tuple[str, str]]:
        """(name, shown value) for every setting, password masked."""
        rows = []
        for name in SETTINGS:
            value = getattr(self, name)
            if isinstance(value, Withheld):
                shown = str(value)
            elif name == "password":
                shown = MASK if value else "(not set)"
            elif value is None:
                shown = "(not set)"
            else:
                shown = str(value)
            rows.append((name, shown))
        return rows

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v}" for k, v in self.describe() if v != "(not set)")
        return f"SmtpMagic({items})"

    def rows(self) -> list[tuple[str, str, str]]:
        """(name, shown value, where it came from) for every setting, password masked."""
        return [(name, shown, self.source(name)) for name, shown in self.describe()]



# What choosing an OAuth2 provider sets, unless given too (or changed from the default before).
OAUTH2_PRESETS: dict[str, dict[str, Any]] = {
    "microsoft": {"host": "smtp.office365.com", "port": 587, "security": "starttls"},
    "google": {"host": "smtp.gmail.com", "port": 465, "security": "tls"},
}


def _oauth2_presets(staged: SmtpMagic, given: Mapping[str, Any]) -> set[str]:
    """Giving a provider, a token command or a token callable means signing in with OAuth2.
    Returns the settings this set besides those ``given``."""
    implied_by = ("oauth2_provider", "oauth2_token_command", "oauth2_token_provider")
    implied: set[str] = set()
    if "auth" not in given and any(key in given and getattr(staged, key) for key in implied_by):
        staged.auth = "oauth2"
        implied.add("auth")
    provider = staged.oauth2_provider
    if "oauth2_provider" not in given or not provider:
        return implied
    traits = SmtpMagic.class_traits()
    presets = OAUTH2_PRESETS.get(provider, {})
    # What --local set (127.0.0.1, no TLS) is no choice of the user's: the preset replaces it.
    chosen_by_local = {key for key in presets if staged.source(key) == LOCAL}
    for key, value in presets.items():
        if key not in given and (getattr(staged, key) == traits[key].default()
                                 or key in chosen_by_local):
            setattr(staged, key, value)
            implied.add(key)
    return implied


def _declared_settings(cls: type[SmtpMagic]) -> tuple[str, ...]:
    """The names of ``cls``'s settings (``config=True`` traits), in declaration order."""
    names: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, TraitType) and value.metadata.get("config"):
                names[name] = None
    return tuple(names)


SETTINGS: tuple[str, ...] = _declared_settings(SmtpMagic)
# The settings a profile holds (an account's): all but those tagged ``profile=False``.
PROFILE_SETTINGS: tuple[str, ...] = tuple(
    n for n in SETTINGS if SmtpMagic.class_traits()[n].metadata.get("profile", True))


def _profile_choice(settings: SmtpMagic) -> ProfileChoice:
    from .profiles import ProfileChoice

    return ProfileChoice(
        settings, names=PROFILE_SETTINGS, normalize=normalize_keys, presets=OAUTH2_PRESETS,
        withheld=lambda: Withheld(login_origin(*(settings.login.bound or settings._login_origin()))),
        secret=Secret)


@dataclass(frozen=True)
class SettingOption:
    """How a setting is given on a command line: ``--port N``, ``--security {auto,...}``..."""

    name: str  # the setting
    flag: str  # e.g. "--port", "--from"
    kind: type  # int, float, bool or str
    choices: tuple[str, ...] | None
    metavar: str | None
    help: str


def setting_options() -> list[SettingOption]:
    """One command-line option per setting, derived from the trait declarations."""
    out = []
    for name in SETTINGS:
        trait = SmtpMagic.class_traits()[name]
        flag = trait.metadata.get("option", "--" + name.replace("_", "-"))
        if flag is False:
            continue
        kind: type = str
        choices = None
        if isinstance(trait, Bool):
            kind = bool
        elif isinstance(trait, Int):
            kind = int
        elif isinstance(trait, Float):
            kind = float
        elif isinstance(trait, Enum):
            choices = tuple(str(v) for v in trait.values or ())
        out.append(SettingOption(name, flag, kind, choices, trait.metadata.get("metavar"),
                                 trait.help.replace("%", "%%")))
    return out


def choices(name: str, settings: SmtpMagic | type[SmtpMagic] = SmtpMagic) -> tuple[str, ...]:
    """The values the Enum setting ``name`` accepts, as its trait declares them (of ``settings``'
    class): every front end offers these, so a new value is one edit of the trait."""
    cls = settings if isinstance(settings, type) else type(settings)
    trait = cls.class_traits()[name]
    if not isinstance(trait, Enum):
        raise TypeError(f"setting {name!r} has no fixed choices")
    return tuple(str(v) for v in trait.values or ())


def body_formats(settings: SmtpMagic | type[SmtpMagic] = SmtpMagic) -> tuple[str, ...]:
    """The formats a message body is written in: the content types, except
    multipart/alternative, which is how an HTML body is sent (with a text part)."""
    return tuple(v for v in choices("content_type", settings) if v != "multipart/alternative")


class ConnectionSettings:
    """An immutable snapshot of every setting, taken when a send starts.

    It has an attribute per setting (``settings.host``, ``settings.timeout``...), so a new
    trait of :class:`SmtpMagic` is in every snapshot without another edit. Snapshots are equal
    (and hash alike) when their values are, so sends with the same settings share connections.
    """

    # Each setting is also a slot: read per message, a slot is ~20x cheaper than __getattr__.
    __slots__ = ("_values", "_hash", *SETTINGS)

    def __init__(self, values: Mapping[str, Any]) -> None:
        unknown = set(values) - set(SETTINGS)
        if unknown:
            raise TypeError(f"not settings: {', '.join(sorted(unknown))}")
        defaults = {name: SmtpMagic.class_traits()[name].default() for name in SETTINGS}
        frozen = {name: _frozen(values.get(name, defaults[name])) for name in SETTINGS}
        object.__setattr__(self, "_values", frozen)
        object.__setattr__(self, "_hash", None)  # computed on first use (a dict key per message)
        for name, value in frozen.items():
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "_values")[name]
        except KeyError:
            raise AttributeError(f"ConnectionSettings has no setting {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ConnectionSettings is immutable; use replace()")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConnectionSettings):
            return NotImplemented
        return bool(self._values == other._values)

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(tuple(self._values.values())))
        return self._hash  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={MASK if k == 'password' and v else v!r}"
                          for k, v in self._values.items() if v is not None)
        return f"ConnectionSettings({shown})"

    def __reduce__(self) -> Any:
        raise TypeError("ConnectionSettings cannot be pickled (it may hold a password)")

    def replace(self, **changes: Any) -> ConnectionSettings:
        return ConnectionSettings({**self._values, **changes})

    @property
    def attachment_limit(self) -> int:
        """The attachment limit in bytes; a MB here is 2**20 bytes, so a "10 MB" file is allowed
        whether the user's file manager counts in MiB or in 10**6 bytes."""
        return int(self.attachment_size * MB)

    @property
    def implicit_tls(self) -> bool:
        return self.security == "tls" or (self.security == "auto" and self.port == 465)


def _frozen(value: Any) -> Any:
    """Lists become tuples, so every snapshot is hashable."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, (dict, set)):
        return tuple(sorted(value.items() if isinstance(value, dict) else value))
    return value


def normalize_keys(values: Mapping[str, Any], *, source: str = "settings") -> dict[str, Any]:
    """Map the connector's names to trait names; refuse unknown keys, suggesting the closest one."""
    valid = set(SETTINGS)
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = ALIASES.get(str(key).lower(), str(key).replace("-", "_"))
        if name not in valid:
            choices = sorted(valid | set(ALIASES))
            raise ConfigError(f"Unknown setting {key!r} in {source}{did_you_mean(str(key), choices)}")
        out[name] = value
    return out


def load_json(path: str | os.PathLike[str], what: str = "Configuration file") -> dict[str, Any]:
    """Read a JSON settings file (an object), with one-sentence errors that name the file.

    A file others could have written is refused first (see ``_paths.check_trusted``)."""
    from ._paths import read_json

    data = read_json(path, what)
    name = str(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {name!r} must hold a JSON object of settings "
                          f"({{\"host\": ...}}), not {_json_kind(data)}.")
    return data


def _json_kind(value: Any) -> str:
    kinds = {list: "a list", str: "a string", int: "a number", float: "a number",
             bool: "true or false", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _coerce(obj: SmtpMagic, name: str, value: Any) -> Any:
    """Accept strings for numeric and boolean settings (environment, CLI options, JSON)."""
    trait = obj.traits()[name]
    if isinstance(value, str):
        if isinstance(trait, Int):
            return int(value.strip())
        if isinstance(trait, Float):
            return float(value.strip())
        if isinstance(trait, Bool):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true or false, not {value!r}")
        if isinstance(trait, Enum):
            return value.strip().lower()
        if isinstance(trait, Unicode) and trait.allow_none and not value.strip():
            return None  # `--password-env ''` unsets it
    if isinstance(trait, Float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist = 2, 80, 80, 4


def _trait_message(key: str, value: Any, exc: Exception, source: str) -> str:
    shown = MASK if key == "password" else _SHORT.repr(value)  # a file's value may be huge
    detail = str(exc)
    if isinstance(exc, TraitError) and key != "password":
        trait = SmtpMagic.class_traits()[key]
        if isinstance(trait, Enum):
            detail = "expected one of " + ", ".join(map(str, trait.values or ()))
        elif detail.startswith("The '"):
            detail = f"expected {trait.info()}"
    elif key == "password":
        detail = "expected a string"
    detail = detail.rstrip(".")
    return f"Invalid value {shown} for setting {key!r} in {source}: {detail}."


_current: SmtpMagic | None = None


def current() -> SmtpMagic:
    """The settings object of this process, created on first use from the environment.

    Inside IPython the extension creates it from the shell's config first, so ``c.SmtpMagic.*``
    applies before the environment does.
    """
    global _current
    if _current is None:
        _current = SmtpMagic().load_env()
    return _current


def set_current(settings: SmtpMagic) -> SmtpMagic:
    global _current
    _current = settings
    return settings
