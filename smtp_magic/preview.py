"""Show a composed message as its recipient will see it (headers, HTML body, attachments)."""

from __future__ import annotations

import base64
import html
import logging
from email.message import EmailMessage

from .compose import Composed

__all__ = ["preview_html", "preview_text"]

log = logging.getLogger(__name__)


def _body_parts(msg: EmailMessage) -> tuple[EmailMessage | None, EmailMessage | None]:
    return msg.get_body(("html",)), msg.get_body(("plain",))  # type: ignore[return-value]


def _inline_images(msg: EmailMessage) -> dict[str, str]:
    """cid -> data: URI, for display in the notebook only (the email itself keeps cid:)."""
    out = {}
    for part in msg.walk():
        cid = part.get("Content-ID")
        if cid and part.get_content_maintype() == "image":
            raw: bytes = part.get_payload(decode=True) or b""  # type: ignore[assignment]
            data = base64.b64encode(raw).decode("ascii")
            out[cid.strip("<>")] = f"data:{part.get_content_type()};base64,{data}"
    return out


def _attachments(msg: EmailMessage) -> list[tuple[str, str, int]]:
    return [
        (part.get_filename() or "(unnamed)", part.get_content_type(),
         len(part.get_payload(decode=True) or b""))
        for part in msg.iter_attachments()
    ]


def preview_html(composed: Composed) -> str:
    """An HTML block for a notebook: the headers, the body, then the attachments."""
    msg = composed.message
    rows = [(name, str(msg[name])) for name in ("From", "To", "Cc", "Subject") if msg[name]]
    bcc = [r for r in composed.recipients if r not in " ".join(v for _, v in rows)]
    if bcc:
        rows.append(("Bcc", ", ".join(bcc) + " (envelope only)"))
    head = "".join(
        f"<tr><th style='text-align:right;padding-right:8px'>{html.escape(k)}</th>"
        f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in rows
    )
    html_part, text_part = _body_parts(msg)
    if html_part is not None:
        body = html_part.get_content()
        for cid, uri in _inline_images(msg).items():
            body = body.replace(f"cid:{cid}", uri)
        # An iframe keeps the email's own styles from leaking into the notebook and back.
        frame = html.escape(body, quote=True)
        body_html = (f"<iframe srcdoc=\"{frame}\" style='width:100%;height:420px;border:1px solid "
                     "#ddd;background:white'></iframe>")
    else:
        text = text_part.get_content() if text_part is not None else ""
        body_html = f"<pre style='white-space:pre-wrap'>{html.escape(text)}</pre>"
    files = "".join(
        f"<li>{html.escape(name)} ({html.escape(ctype)}, {size / 1000:.1f} kB)</li>"
        for name, ctype, size in _attachments(msg)
    )
    files_html = f"<div><b>Attachments</b><ul>{files}</ul></div>" if files else ""
    return (
        "<div class='smtp-magic-preview'><div><b>Preview, nothing was sent</b></div>"
        f"<table>{head}</table>{body_html}{files_html}</div>"
    )


def preview_text(composed: Composed) -> str:
    """The same, as text for a terminal."""
    msg = composed.message
    lines = [f"{name}: {msg[name]}" for name in ("From", "To", "Cc", "Subject") if msg[name]]
    _, text_part = _body_parts(msg)
    lines += ["", text_part.get_content() if text_part is not None else ""]
    lines += [f"[attachment] {n} ({t}, {s / 1000:.1f} kB)" for n, t, s in _attachments(msg)]
    return "\n".join(lines)
