"""A real OpenID Connect authorization server for the OAuth2 tests, and a user who clicks through it.

``tests/oidc/server.mjs`` runs node-oidc-provider (device flow, authorization code + PKCE on
loopback redirects, rotating refresh tokens, revocation, introspection) on 127.0.0.1. This module
starts and stops it, approves device codes and authorization requests through the provider's own
HTML pages (login, consent, device confirmation) the way a person in a browser would, and
validates bearer tokens for the SMTP server by asking the introspection endpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlparse

import requests

if TYPE_CHECKING:
    from typing_extensions import Self

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "smtp-magic-test"  # public client, 600 s access tokens
SHORT_CLIENT_ID = "smtp-magic-short"  # public client, 2 s access tokens
SERVER_CLIENT = ("smtp-server", "smtp-server-secret")  # may introspect
SCOPES = "openid email offline_access smtp"
USER_EMAIL = "analyst@example.test"


class Unavailable(RuntimeError):
    """Node or the npm packages in tests/oidc are missing."""


def unavailable_reason() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        return "tests/oidc/node_modules is missing (run `npm ci` in tests/oidc)"
    return None


# -- the provider's pages, read like a browser -----------------------------------------------
@dataclass
class _Form:
    action: str
    method: str
    id: str | None
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str | None, str | None, str | None]] = field(default_factory=list)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self.by_id: dict[str, _Form] = {}
        self.title = ""
        self._in_title = False
        self._form: _Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "title":
            self._in_title = True
        elif tag == "form":
            self._form = _Form(a.get("action") or "", (a.get("method") or "get").lower(), a.get("id"))
            self.forms.append(self._form)
            if self._form.id:
                self.by_id[self._form.id] = self._form
        elif tag == "input":
            target = self.by_id.get(a.get("form") or "") or self._form
            if target is not None and a.get("name"):
                target.fields[a["name"] or ""] = a.get("value") or ""
        elif tag == "button":
            target = self.by_id.get(a.get("form") or "") or self._form
            if target is not None:
                target.buttons.append((a.get("name"), a.get("value"), a.get("autofocus")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def _page(response: requests.Response) -> _Forms:
    parser = _Forms()
    parser.feed(response.text)
    return parser


class _StopAtLoopback(Exception):
    def __init__(self, url: str):
        super().__init__(url)
        self.url = url


def click_through(session: requests.Session, response: requests.Response, login: str,
                  *, stop_at: str | None = None, abort: bool = False, max_pages: int = 12
                  ) -> requests.Response | str:
    """Fill in and submit the provider's pages until none is left: the login form (any password),
    the consent form, the device-code confirmation ("Continue", or "Abort" with ``abort``).

    With ``stop_at`` (a redirect URI prefix), stops at the redirect there and returns its URL
    instead of following it (that is where the app's loopback server listens).
    """
    for _ in range(max_pages):
        response.raise_for_status()
        page = _page(response)
        forms = [f for f in page.forms if f.method == "post"]
        if not forms:
            return response
        form = forms[0]
        data = dict(form.fields)
        if "login" in data:
            data.update(login=login, password="any password")
        data.pop("abort", None)
        if abort and any(name == "abort" for name, _, _ in form.buttons):
            data["abort"] = "yes"
        target = urljoin(response.url, form.action)
        response = _post(session, target, data, stop_at)
        if isinstance(response, str) or "abort" in data:
            return response
    raise AssertionError(f"Still on a form after {max_pages} pages: {response.url}")


def _post(session: requests.Session, url: str, data: dict[str, str], stop_at: str | None
          ) -> requests.Response | str:
    """POST, then follow redirects by hand so that a redirect to ``stop_at`` can be caught."""
    response = session.post(url, data=data, allow_redirects=False, timeout=10)
    return _follow(session, response, stop_at)


def _follow(session: requests.Session, response: requests.Response, stop_at: str | None
            ) -> requests.Response | str:
    for _ in range(20):
        if response.status_code not in (301, 302, 303, 307, 308):
            return response
        location = urljoin(response.url, response.headers["Location"])
        if stop_at is not None and location.startswith(stop_at):
            return location
        response = session.get(location, allow_redirects=False, timeout=10)
    raise AssertionError("too many redirects")


# -- the server ------------------------------------------------------------------------------
class IdentityProvider:
    """node-oidc-provider on 127.0.0.1, started by :meth:`start` and stopped by :meth:`stop`."""

    def __init__(self, *, access_ttl: int = 600, short_access_ttl: int = 2,
                 tls: tuple[Path, Path] | None = None, ca: Path | None = None, path: str = ""):
        """``tls`` (certificate and key PEM files, trusted through ``ca``) and ``path`` (e.g.
        ``/contoso/v2.0``) shape the issuer like a Microsoft authority, as MSAL requires."""
        self.access_ttl = access_ttl
        self.short_access_ttl = short_access_ttl
        self.tls, self.path = tls, path
        self.verify: str | bool = str(ca) if ca else True
        self.issuer = ""
        self._proc: subprocess.Popen[str] | None = None
        self._log: list[str] = []

    def start(self) -> IdentityProvider:
        reason = unavailable_reason()
        if reason:
            raise Unavailable(reason)
        env = {**os.environ, "OIDC_PORT": "0", "OIDC_ACCESS_TTL": str(self.access_ttl),
               "OIDC_SHORT_ACCESS_TTL": str(self.short_access_ttl), "NODE_ENV": "test",
               "OIDC_PATH": self.path}
        if self.tls:
            env.update(OIDC_TLS_CERT=str(self.tls[0]), OIDC_TLS_KEY=str(self.tls[1]))
        # stdin stays open: the server exits by itself when this process dies and it closes.
        self._proc = subprocess.Popen(["node", str(OIDC_DIR / "server.mjs")], cwd=OIDC_DIR,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env)
        assert self._proc.stdout is not None and self._proc.stderr is not None
        threading.Thread(target=self._drain, args=(self._proc.stderr,), daemon=True).start()
        line = self._proc.stdout.readline()  # printed once listening
        if not line:
            self._proc.wait(timeout=10)
            raise RuntimeError("the OIDC server did not start:\n" + "".join(self._log))
        self.issuer = json.loads(line)["issuer"]
        self.metadata = requests.get(self.issuer + "/.well-known/openid-configuration",
                                     timeout=10, verify=self.verify).json()
        return self

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self._log.append(line)

    @property
    def log(self) -> str:
        return "".join(self._log)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- acting as the user ---------------------------------------------------------------
    def approve_device_code(self, verification_uri: str, user_code: str,
                            login: str = USER_EMAIL, *, abort: bool = False) -> str:
        """Open the verification page, type the user code, sign in, consent and confirm (or
        abort). Returns the final page's title ("Sign-in Success" when it worked)."""
        with requests.Session() as browser:
            browser.verify = self.verify
            page = browser.get(verification_uri, timeout=10)
            form = next(f for f in _page(page).forms if f.method == "post")
            data = {**form.fields, "user_code": user_code}
            response = _post(browser, urljoin(page.url, form.action), data, None)
            assert not isinstance(response, str)
            final = click_through(browser, response, login, abort=abort)
            assert not isinstance(final, str)
            return _page(final).title.strip()

    def approve_authorization(self, url: str, login: str = USER_EMAIL) -> str:
        """Follow an authorization URL through login and consent; return the redirect URL
        (``http://127.0.0.1:PORT/?code=...``) without visiting it."""
        parsed = urlparse(url)
        assert parsed.netloc == urlparse(self.issuer).netloc, url
        from urllib.parse import parse_qs

        redirect = parse_qs(parsed.query)["redirect_uri"][0]
        with requests.Session() as browser:
            browser.verify = self.verify
            first = browser.get(url, allow_redirects=False, timeout=10)
            response = _follow(browser, first, redirect)
            if isinstance(response, str):
                return response
            result = click_through(browser, response, login, stop_at=redirect)
            assert isinstance(result, str), f"no redirect to {redirect}: {result.url}"
            return result

    # -- acting as the resource server ----------------------------------------------------
    def introspect(self, token: str) -> dict[str, Any]:
        response = requests.post(self.metadata["introspection_endpoint"], data={"token": token},
                                 auth=SERVER_CLIENT, timeout=10, verify=self.verify)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def validate(self, user: str, token: str) -> bool:
        """The SMTP server's check: an active access token of the user who signs in."""
        info = self.introspect(token)
        return bool(info.get("active")) and info.get("token_type", "access_token") != \
            "refresh_token" and str(info.get("sub", "")).lower() == user.lower()

    def revoke(self, token: str, client_id: str = CLIENT_ID) -> None:
        response = requests.post(self.metadata["revocation_endpoint"],
                                 data={"token": token, "client_id": client_id}, timeout=10,
                                 verify=self.verify)
        response.raise_for_status()


def started(**kwargs: Any) -> Iterator[IdentityProvider]:
    idp = IdentityProvider(**kwargs).start()
    try:
        yield idp
    finally:
        idp.stop()
