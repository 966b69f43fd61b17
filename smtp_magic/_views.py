"""What the magics display: tables, previews and captured mail, as HTML in notebooks and text in terminals."""

from __future__ import annotations

import base64
import html
import logging
import time
from collections.abc import Sequence
from email.message import EmailMessage
from typing import Any

__all__ = ["Block", "Inbox", "Table"]

log = logging.getLogger(__name__)


class Table:
    """Rows under headers: an HTML table in a notebook, aligned columns in a terminal."""

    def __init__(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str = "",
                 empty: str = "(nothing)") -> None:
        self.headers = tuple(headers)
        self.rows = [tuple("" if v is None else str(v) for v in row) for row in rows]
        self.title = title
        self.empty = empty

    def _repr_html_(self) -> str:
        title = f"<div><b>{html.escape(self.title)}</b></div>" if self.title else ""
        if not self.rows:
            return f"{title}<div>{html.escape(self.empty)}</div>"
        cell = "text-align:left;vertical-align:top"
        head = "".join(f"<th style='{cell}'>{html.escape(h)}</th>" for h in self.headers)
        body = "".join(
            "<tr>" + "".join(f"<td style='{cell}'>{html.escape(v)}</td>" for v in row) + "</tr>"
            for row in self.rows
        )
        return f"{title}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        lines = [self.title] if self.title else []
        if not self.rows:
            return "\n".join([*lines, self.empty])
        widths = [max(len(h), *(len(r[i]) for r in self.rows)) for i, h in enumerate(self.headers)]
        for row in (self.headers, *self.rows):
            lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
        return "\n".join(lines)


class Block:
    """Ready-made HTML with its text form (previews)."""

    def __init__(self, html_text: str, text: str) -> None:
        self.html, self.text = html_text, text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


def _inline_images(msg: EmailMessage) -> dict[str, str]:
    """cid -> data: URI, so the notebook can show a received message's inline images."""
    out = {}
    for part in msg.walk():
        cid = part.get("Content-ID")
        if cid and part.get_content_maintype() == "image":
            payload = part.get_payload(decode=True)
            raw = payload if isinstance(payload, bytes) else b""
            data = base64.b64encode(raw).decode("ascii")
            out[str(cid).strip("<>")] = f"data:{part.get_content_type()};base64,{data}"
    return out


class Inbox:
    """Messages of the capture server, newest first, each in a collapsible block."""

    def __init__(self, messages: Sequence[Any], where: str) -> None:
        self.messages = list(messages)
        self.where = where

    @staticmethod
    def _head(captured: Any) -> tuple[str, str, str, str]:
        msg = captured.message
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(captured.received))
        to = ", ".join(captured.rcpt_to) or str(msg.get("To", ""))
        return when, str(msg.get("From", captured.mail_from)), to, str(msg.get("Subject", ""))

    def _body_html(self, msg: EmailMessage) -> str:
        part = msg.get_body(("html", "plain"))
        if part is None:
            return "<i>(no body)</i>"
        content = part.get_content()
        if part.get_content_subtype() != "html":
            return f"<pre style='white-space:pre-wrap'>{html.escape(content)}</pre>"
        for cid, uri in _inline_images(msg).items():
            content = content.replace(f"cid:{cid}", uri)
        # An iframe keeps the message's styles apart from the notebook's.
        return (f"<iframe srcdoc=\"{html.escape(content, quote=True)}\" style='width:100%;"
                "height:360px;border:1px solid #ddd;background:white'></iframe>")

    def _repr_html_(self) -> str:
        if not self.messages:
            return f"<div>No messages in {html.escape(self.where)}.</div>"
        blocks = []
        for captured in self.messages:
            when, sender, to, subject = map(html.escape, self._head(captured))
            files = [p.get_filename() or "(unnamed)" for p in captured.message.iter_attachments()]
            attached = (f"<div>Attachments: {html.escape(', '.join(files))}</div>" if files else "")
            blocks.append(
                f"<details><summary><b>{subject or '(no subject)'}</b> &mdash; {sender} &rarr; "
                f"{to} <span style='color:#57606a'>{when}</span></summary>"
                f"{self._body_html(captured.message)}{attached}</details>"
            )
        return (f"<div><b>{len(self.messages)} message(s)</b> in {html.escape(self.where)}</div>"
                + "".join(blocks))

    def __repr__(self) -> str:
        if not self.messages:
            return f"No messages in {self.where}."
        lines = [f"{len(self.messages)} message(s) in {self.where}"]
        for captured in self.messages:
            when, sender, to, subject = self._head(captured)
            lines.append(f"{when}  {sender} -> {to}  {subject}")
        return "\n".join(lines)
