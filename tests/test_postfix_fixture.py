"""Smoke test of the private Postfix fixture: one message through each port, found on disk."""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import make_msgid
from typing import TYPE_CHECKING, Any

import aiosmtplib
import pytest

if TYPE_CHECKING:
    from conftest import Postfix

pytestmark = pytest.mark.postfix


async def test_each_port_delivers(postfix: Postfix) -> None:
    trust = ssl.create_default_context(cafile=str(postfix.ca))
    login = {"username": postfix.user, "password": postfix.password}
    modes: dict[str, tuple[int, dict[str, Any]]] = {
        "plain": (postfix.smtp_port, {"start_tls": False}),
        "starttls": (postfix.smtp_port, {"start_tls": True}),
        "submission": (postfix.submission_port, {"start_tls": True, **login}),
        "smtps": (postfix.smtps_port, {"use_tls": True, **login}),
    }
    for mode, (port, options) in modes.items():
        msg = EmailMessage()
        msg["From"], msg["To"] = "nb@example.test", f"{mode}@example.org"
        msg["Subject"] = f"postfix {mode} ✓"
        msg["Message-ID"] = make_msgid(domain="example.test")
        msg.set_content(f"via {mode}")
        msg.add_attachment(b"\x00\xffbin", maintype="application", subtype="octet-stream",
                           filename=f"{mode}.bin")
        await aiosmtplib.send(msg, hostname=postfix.host, port=port, tls_context=trust,
                              timeout=10, **options)
        got = postfix.wait_for(msg["Message-ID"])
        assert got["Subject"] == msg["Subject"], mode
        assert got["Delivered-To"] == f"{mode}@example.org"
        (att,) = got.iter_attachments()
        assert att.get_content() == b"\x00\xffbin"
