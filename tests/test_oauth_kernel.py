"""Headless notebook runs (papermill) signed in with OAuth2, and a scan for leaked tokens.

With a saved sign-in the run sends; without one it fails at once with exit 3's one-line hint
instead of waiting for a device code. Afterwards no access or refresh token may be found in the
executed notebook, papermill's output, the outbox, the captured mail or the token-free files.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from idp import CLIENT_ID, SCOPES, USER_EMAIL, IdentityProvider
from kernels import kernel_environment

from smtp_magic import oauth
from smtp_magic.server import CaptureServer
from smtp_magic.tokenstore import TokenStore

pytest.importorskip("papermill")
pytestmark = [pytest.mark.oauth, pytest.mark.kernel]


class RecordingValidator:
    """The SMTP server's token check, remembering every token presented (to scan for)."""

    def __init__(self, idp: IdentityProvider):
        self.idp = idp
        self.seen: list[str] = []

    def __call__(self, user: str, token: str) -> bool:
        self.seen.append(token)
        return self.idp.validate(user, token)


def notebook(root: Path, server: CaptureServer, idp: IdentityProvider) -> Path:
    cells = [
        "%load_ext smtp_magic",
        (f"%smtp_config --host {server.host} --port {server.port} --security starttls "
         f"--oauth2-provider {idp.issuer} --oauth2-client-id {CLIENT_ID} "
         f"--oauth2-scopes '{SCOPES}' --username {USER_EMAIL} --timeout 20"),
        "%smtp_config --check",
        '%%smtp_send --to boss@example.test --subject "Headless OAuth2"\n<p>numbers</p>',
        "%smtp_outbox",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = root / "report.ipynb"
    nbformat.write(nb, path)
    return path


def papermill(root: Path, source: Path, ca_file: Path) -> subprocess.CompletedProcess[str]:
    env = {**kernel_environment(root), "SSL_CERT_FILE": str(ca_file),
           "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    return subprocess.run(
        [sys.executable, "-m", "papermill", str(source), str(root / "out.ipynb"), "--kernel",
         "python3", "--no-progress-bar", "--cwd", str(root)],
        capture_output=True, text=True, env=env, timeout=180, check=False)


def sign_in_for(root: Path, idp: IdentityProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one interactive sign-in, saved where the kernel will look (root/xdg)."""
    from test_oauth import User

    monkeypatch.setenv("XDG_DATA_HOME", str(root / "xdg"))
    cfg = oauth.OAuthConfig(provider=idp.issuer, client_id=CLIENT_ID,
                            scopes=tuple(SCOPES.split()), username=USER_EMAIL)
    oauth.login(cfg, User(idp))
    oauth.clear_memory()


def files_under(*roots: Path) -> list[Path]:
    return [p for r in roots if r.exists() for p in r.rglob("*") if p.is_file()]


@pytest.fixture
def recorder(idp: IdentityProvider) -> RecordingValidator:
    return RecordingValidator(idp)


def test_headless_run_with_a_saved_sign_in_sends_and_leaks_no_token(
        tmp_path: Path, idp: IdentityProvider, recorder: RecordingValidator,
        server_tls: Any, ca_file: Path, no_keyring: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "run"
    root.mkdir()
    sign_in_for(root, idp, monkeypatch)
    store = TokenStore(root / "xdg" / "smtp_magic" / "oauth2-tokens.json", use_keyring=False)
    key = oauth.OAuthConfig(provider=idp.issuer, client_id=CLIENT_ID,
                            scopes=tuple(SCOPES.split())).key
    refresh_before = store.get(key)["refresh_token"]  # type: ignore[index]
    with CaptureServer(tmp_path / "mail", tls="starttls", ssl_context=server_tls,
                       token_validator=recorder, require_auth=True) as server:
        done = papermill(root, notebook(root, server, idp), ca_file)
        assert done.returncode == 0, done.stderr[-3000:]
        [msg] = server.wait_for(1)
    assert msg.subject == "Headless OAuth2"
    out = (root / "out.ipynb").read_text()
    assert f"signed in with OAuth2 (XOAUTH2) as {USER_EMAIL}" in out  # the --check cell
    # The secrets scan: every token the server saw, and both refresh tokens.
    refresh_after = store.get(key)["refresh_token"]  # type: ignore[index]
    secrets = {*recorder.seen, refresh_before, refresh_after}
    assert recorder.seen and all(len(s) > 20 for s in secrets)
    token_file = root / "xdg" / "smtp_magic" / "oauth2-tokens.json"
    scanned = [p for p in files_under(root, tmp_path / "mail") if p != token_file]
    assert any(p.name == "out.ipynb" for p in scanned)
    texts = {str(p): p.read_bytes().decode("utf-8", "replace") for p in scanned}
    texts["papermill stdout"], texts["papermill stderr"] = done.stdout, done.stderr
    leaks = [(where, s[:6]) for where, text in texts.items() for s in secrets if s in text]
    assert leaks == []


def test_headless_run_without_a_sign_in_fails_at_once_with_the_hint(
        tmp_path: Path, idp: IdentityProvider, server_tls: Any, ca_file: Path) -> None:
    root = tmp_path / "run"
    root.mkdir()
    with CaptureServer(tmp_path / "mail", tls="starttls", ssl_context=server_tls,
                       token_validator=idp.validate, require_auth=True) as server:
        source = notebook(root, server, idp)
        nb = nbformat.read(source, as_version=4)
        del nb.cells[2]  # no --check: the send itself must fail
        nbformat.write(nb, source)
        started = time.monotonic()
        done = papermill(root, source, ca_file)
        elapsed = time.monotonic() - started
        assert server.count() == 0 and server.logins == []
    assert done.returncode != 0
    out = (root / "out.ipynb").read_text()
    assert "`%smtp_config --oauth2-login` interactively once" in out
    assert "AuthFailed" in out  # exit 3
    assert elapsed < 90  # kernel start-up included; a device-code wait would be 10 minutes


def test_oauth2_login_refuses_to_wait_in_a_headless_run(
        tmp_path: Path, idp: IdentityProvider, ca_file: Path) -> None:
    root = tmp_path / "run"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "%load_ext smtp_magic",
        (f"%smtp_config --oauth2-provider {idp.issuer} --oauth2-client-id {CLIENT_ID} "
        "--oauth2-login"))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "login.ipynb")
    started = time.monotonic()
    done = papermill(root, root / "login.ipynb", ca_file)
    assert done.returncode != 0 and time.monotonic() - started < 90
    out = (root / "out.ipynb").read_text()
    assert "needs someone to enter the code" in out
    assert "/device" not in out  # no device code was even requested

