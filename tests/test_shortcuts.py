"""The shortcut boundary: one module, version windows, runtime checks, public fallbacks that work."""

from __future__ import annotations

import email
import email.policy
import importlib
import re
import sys
from pathlib import Path

import aiosmtplib
import pytest

import smtp_magic
from smtp_magic import _shortcuts
from smtp_magic.config import SmtpMagic
from smtp_magic.mime import Composed
from smtp_magic.models import Attachment, SendRequest
from smtp_magic.stages import prepare, prepare_many

compose_module = importlib.import_module("smtp_magic.mime")
PACKAGE = Path(smtp_magic.__file__).parent
# Private names of other libraries that the package once used directly.
PRIVATE = re.compile(r"_encode_text|_make_boundary|_drain_helper|\._paused|\._loop\b|"
                     r"__class__\s*=|aiosmtplib\.protocol|\._buffer\b|_response_waiter")


@pytest.fixture
def fresh_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget this process's runtime-check results for the test (and the checked shapes)."""
    monkeypatch.setattr(_shortcuts, "_checked", {})
    monkeypatch.setattr(compose_module, "_skeletons", {})
    compose_module._samples_checked.cache_clear()


def test_private_names_of_other_libraries_appear_only_in_the_boundary_module():
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "_shortcuts.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []


def test_the_pinned_aiosmtplib_range_is_the_declared_window_and_includes_the_installed_one():
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    pin = re.search(r'"aiosmtplib>=([\d.]+),<([\d.]+)"', pyproject)
    assert pin, "pyproject.toml must pin aiosmtplib as >=LOW,<HIGH"
    (low, high) = _shortcuts.AIOSMTPLIB_WINDOW
    assert (_shortcuts._version(pin.group(1)) + (0,))[:2] == low
    assert (_shortcuts._version(pin.group(2)) + (0,))[:2] == high
    assert low <= _shortcuts._version(aiosmtplib.__version__)[:2] < high
    assert _shortcuts.PYTHON_WINDOW[0] <= sys.version_info[:2] < _shortcuts.PYTHON_WINDOW[1]


def test_the_environment_switch_turns_every_shortcut_off(monkeypatch):
    monkeypatch.setenv(_shortcuts.ENV, "1")
    assert _shortcuts.status() == {f: f"{_shortcuts.ENV} is set" for f in _shortcuts.FEATURES}
    assert not any(_shortcuts.allowed(f) for f in _shortcuts.FEATURES)
    monkeypatch.setenv(_shortcuts.ENV, "0")  # "0" and "" mean: shortcuts on
    assert "is set" not in _shortcuts.status()["compose"]


def test_versions_outside_the_window_use_the_public_apis(monkeypatch, fresh_checks):
    monkeypatch.delenv(_shortcuts.ENV, raising=False)
    monkeypatch.setattr(_shortcuts, "AIOSMTPLIB_WINDOW", ((99, 0), (100, 0)))
    monkeypatch.setattr(_shortcuts, "PYTHON_WINDOW", ((2, 0), (3, 0)))
    state = _shortcuts.status()
    assert "outside [2.0, 3.0)" in state["compose"] and "outside [2.0, 3.0)" in state["pipelining"]
    monkeypatch.setattr(_shortcuts, "PYTHON_WINDOW", ((3, 0), (99, 0)))
    assert "aiosmtplib" in _shortcuts.status()["pipelining"]
    assert _shortcuts.allowed("compose")


def test_a_failed_self_check_turns_the_fast_composer_off_and_messages_still_come_out_right(
        monkeypatch, fresh_checks, smtp_server):
    monkeypatch.delenv(_shortcuts.ENV, raising=False)

    def wrong(text, policy):  # an encoder that changed behaviour in some future Python
        return "7bit", text.upper()

    monkeypatch.setattr(_shortcuts, "encode_text", wrong)
    with pytest.warns(RuntimeWarning, match="'compose' shortcut failed its self-check"):
        r = smtp_magic.send("bob@example.test", "Checked", "<p>hello there</p>",
                            sender="a@example.test",
                            config={"host": "127.0.0.1", "port": smtp_server.port,
                                    "security": "none"})
    assert r.ok, r.message
    assert _shortcuts.status()["compose"] == "its runtime check failed"
    msg = smtp_server.messages()[0].message
    assert msg.get_body(("plain",)).get_content().strip() == "hello there"
    assert "<p>hello there</p>" in msg.get_body(("html",)).get_content()


def test_the_self_check_passes_here_and_would_catch_a_changed_encoder(monkeypatch):
    assert compose_module._self_check()
    monkeypatch.setattr(_shortcuts, "encode_text", lambda text, policy: ("8bit", text))
    assert not compose_module._self_check()


def _wrong(text, policy):  # an encoder that changed behaviour in some future Python
    return "7bit", text.upper()


def _composed_bytes(request: SendRequest) -> bytes:
    settings = SmtpMagic(sender="a@example.test").snapshot()
    return prepare(request, settings).as_bytes()


def test_the_first_message_of_each_new_shape_is_checked(monkeypatch, fresh_checks, tmp_path):
    monkeypatch.delenv(_shortcuts.ENV, raising=False)
    html = SendRequest(to=("bob@example.test",), subject="S", body="<p>hello there</p>")
    _composed_bytes(html)
    assert _shortcuts.status()["compose"] == "on"
    monkeypatch.setattr(_shortcuts, "encode_text", _wrong)
    # A new shape (an attachment): built both ways, the difference seen, the shortcut off.
    with_file = html.replace(attachments=(Attachment.from_bytes("a.bin", b"\0" * 100),))
    with pytest.warns(RuntimeWarning, match="'compose' shortcut failed its self-check"):
        data = _composed_bytes(with_file)
    assert _shortcuts.status()["compose"] == "its runtime check failed"
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg.get_body(("plain",)).get_content().strip() == "hello there"  # not HELLO THERE


def test_a_message_with_a_large_attachment_is_checked_with_the_samples(monkeypatch,
                                                                        fresh_checks):
    """Building a message with a large attachment whole, to compare, is what the fast path
    avoids: the sample messages are checked instead."""
    monkeypatch.delenv(_shortcuts.ENV, raising=False)
    monkeypatch.setattr(_shortcuts, "encode_text", _wrong)
    compared = []
    same_as_email_package = compose_module._same_as_email_package
    monkeypatch.setattr(compose_module, "_same_as_email_package",
                        lambda *args: compared.append(args[2]) or same_as_email_package(*args))
    big = SendRequest(to=("bob@example.test",), subject="S", body="<p>hello there</p>",
                      attachments=(Attachment.from_bytes("big.bin", b"\0" * (2 << 20)),))
    with pytest.warns(RuntimeWarning, match="'compose' shortcut failed its self-check"):
        data = _composed_bytes(big)
    assert big not in compared  # never built whole just to compare
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg.get_body(("plain",)).get_content().strip() == "hello there"


def test_a_transport_that_is_not_aiosmtplibs_is_not_taken_over(fresh_checks, monkeypatch):
    monkeypatch.delenv(_shortcuts.ENV, raising=False)

    class Transport:
        def is_closing(self):
            return False

        def set_protocol(self, protocol):
            raise AssertionError("must not be taken over")

        def get_protocol(self):
            return object()  # some other protocol than aiosmtplib's

    class Smtp:
        transport, protocol = Transport(), object()

    assert _shortcuts.take_transport(Smtp()) is None
    assert _shortcuts.status()["pipelining"] == "its runtime check failed"


@pytest.mark.parametrize("mode", ["shortcuts", "public"])
def test_both_paths_deliver_the_same_message(mode, monkeypatch, fresh_checks, smtp_server,
                                             tmp_path):
    if mode == "public":
        monkeypatch.setenv(_shortcuts.ENV, "1")
    elif not (_shortcuts.allowed("compose") and _shortcuts.allowed("pipelining")):
        pytest.skip(f"shortcuts off: {_shortcuts.status()}")
    data = bytes(range(256)) * 4000  # ~1 MB: streamed in chunks on the shortcut path
    request = SendRequest(to="bob@example.test", cc="Carol <carol@example.test>",
                          subject="Grüße from both paths", body="<p>" + "é " * 500 + "</p>",
                          sender="a@example.test",
                          attachments=[Attachment.from_bytes("data.bin", data)])
    config = {"host": "127.0.0.1", "port": smtp_server.port, "security": "none"}
    (r,) = smtp_magic.send_many([request], config=config)
    assert r.ok, r.message
    state = _shortcuts.status()
    assert (state["compose"], state["pipelining"]) == (
        ("on", "on") if mode == "shortcuts" else (f"{_shortcuts.ENV} is set",) * 2)
    msg = smtp_server.messages()[0].message
    assert msg["Subject"] == "Grüße from both paths" and msg["Message-ID"] == r.message_id
    assert msg.get_body(("html",)).get_content().count("é") == 500
    (att,) = msg.iter_attachments()
    assert att.get_filename() == "data.bin" and att.get_content() == data
    assert email.message_from_bytes(msg.as_bytes(), policy=email.policy.default).defects == []


@pytest.mark.parametrize("server_kind", ["tls_server", "starttls_server"])
def test_a_large_message_streams_over_tls(server_kind, request, client_ssl_env, fresh_checks):
    """Flow control through an SSL transport taken over from aiosmtplib (STARTTLS or implicit)."""
    server = request.getfixturevalue(server_kind)
    data = bytes(range(256)) * (3 * 4096)  # 3 MiB
    config = {"host": "127.0.0.1", "port": server.port,
              "security": "tls" if server_kind == "tls_server" else "starttls"}
    r = smtp_magic.send("bob@example.test", "Big over TLS", "see attached",
                        sender="a@example.test", content_type="text/plain",
                        attachments=[Attachment.from_bytes("big.bin", data)], config=config)
    assert r.ok, r.message
    (att,) = server.messages()[0].message.iter_attachments()
    assert att.get_content() == data
    if _shortcuts.allowed("pipelining"):
        assert _shortcuts.status()["pipelining"] == "on"


# -- the smaller reaches: the libraries still have what each shortcut relies on ----------------------

def test_ipykernel_still_keeps_the_last_execute_requests_allow_stdin():
    kernelbase = pytest.importorskip("ipykernel.kernelbase")
    assert "_allow_stdin" in kernelbase.Kernel.class_traits()

    class Kernel:  # a kernel that keeps it, and one that does not (another kernel)
        _allow_stdin = False

    assert _shortcuts.kernel_allows_stdin(Kernel()) is False
    Kernel._allow_stdin = True
    assert _shortcuts.kernel_allows_stdin(Kernel()) is True
    assert _shortcuts.kernel_allows_stdin(object()) is None


def test_matplotlib_figures_still_give_their_suptitle_both_ways():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure()
    assert _shortcuts.figure_suptitle(figure) == ""
    figure.suptitle("Sales by month")
    assert _shortcuts.figure_suptitle(figure) == "Sales by month"
    # matplotlib 3.6 and 3.7 have no get_suptitle: the private text object must hold the same.
    assert figure._suptitle.get_text() == "Sales by month"

    class Old:  # a figure as matplotlib 3.7 made it
        _suptitle = figure._suptitle

    assert _shortcuts.figure_suptitle(Old()) == "Sales by month"


def test_dkimpy_still_has_the_internals_the_streaming_signer_uses():
    dkim = pytest.importorskip("dkim")
    from dkim.canonicalization import CanonicalizationPolicy

    assert callable(dkim.fold) and callable(dkim.select_headers) and dkim.RE_BTAG.sub
    assert callable(dkim.DKIM.gen_header) and CanonicalizationPolicy.from_c_value
    assert _shortcuts.dkim_blank_signature(b"v=1; b=abc\r\n def") == b"v=1; b="
    headers = [(b"From", b" a\r\n"), (b"To", b" b\r\n"), (b"From", b" c\r\n")]
    assert _shortcuts.dkim_select_headers(headers, (b"from", b"from")) == [
        (b"From", b" c\r\n"), (b"From", b" a\r\n")]
    assert _shortcuts.dkim_fold(b"x=" + b"a" * 100, 14).count(b"\r\n") >= 1


def test_a_figures_suptitle_is_its_title_before_its_axes():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from smtp_magic._kinds import title_of

    figure = Figure()
    axes = figure.subplots()
    axes.set_title("Oslo")
    assert title_of(axes) == "Oslo"
    figure.suptitle("Temperatures")
    assert title_of(figure) == title_of(axes) == "Temperatures"


@pytest.mark.parametrize("hooks", [True, False], ids=["its hooks", "aiosmtpd binds"])
def test_the_capture_server_listens_with_and_without_aiosmtpds_private_hooks(
        hooks: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiosmtpd.controller import Controller

    from smtp_magic import server

    assert _shortcuts.controller_hooks(Controller)  # aiosmtpd still has both
    monkeypatch.setattr(_shortcuts, "controller_hooks", lambda controller: hooks)
    server._controller_class.cache_clear()
    try:
        with server.CaptureServer(tmp_path / "mail") as capture:
            assert capture.port > 0
            smtp_magic.send("bob@example.org", "Hello", "hi", config={
                "host": "127.0.0.1", "port": capture.port, "security": "none",
                "sender": "me@example.org"})
            assert [m.subject for m in capture.wait_for(1)] == ["Hello"]
    finally:
        server._controller_class.cache_clear()


def test_the_environment_switch_is_read_once_a_batch_and_applies_to_the_next(monkeypatch,
                                                                              fresh_checks):
    monkeypatch.delenv(_shortcuts.ENV, raising=False)
    fast = []
    render_fast = compose_module._render_fast
    monkeypatch.setattr(compose_module, "_render_fast",
                        lambda *args, **kw: fast.append(args[0].subject) or render_fast(*args, **kw))
    reads = []
    allowed = _shortcuts.allowed
    monkeypatch.setattr(_shortcuts, "allowed", lambda feature: reads.append(feature) or allowed(feature))
    settings = SmtpMagic(sender="a@example.test").snapshot()
    batch = [(SendRequest(to=("bob@example.test",), subject=f"S{i}", body="<p>hello</p>"), settings)
             for i in range(3)]
    first = prepare_many(batch)
    assert fast == ["S0", "S1", "S2"] and reads == ["compose"]  # asked once for the batch
    monkeypatch.setenv(_shortcuts.ENV, "1")  # set between two sends: the next one is public
    fast.clear()
    second = prepare_many(batch)
    assert fast == []
    assert [m.as_bytes().count(b"hello") for m in second] == [m.as_bytes().count(b"hello")
                                                             for m in first]


def test_a_check_that_fails_in_a_batch_turns_the_fast_composer_off_for_the_rest_of_it(
        monkeypatch, fresh_checks):
    monkeypatch.delenv(_shortcuts.ENV, raising=False)
    settings = SmtpMagic(sender="a@example.test").snapshot()
    html = SendRequest(to=("bob@example.test",), subject="S", body="<p>hello there</p>")
    prepare(html, settings)  # this shape is checked and on
    monkeypatch.setattr(_shortcuts, "encode_text", _wrong)
    with_file = html.replace(attachments=(Attachment.from_bytes("a.bin", b"\0" * 100),))
    with pytest.warns(RuntimeWarning, match="'compose' shortcut failed its self-check"):
        made = prepare_many([(with_file, settings), (html, settings)])
    # The second message's shape was checked before, but the shortcut is off from the failure on.
    assert all(isinstance(m, Composed) for m in made)
    msg = email.message_from_bytes(made[1].as_bytes(), policy=email.policy.default)
    assert msg.get_body(("plain",)).get_content().strip() == "hello there"  # not HELLO THERE
