"""An executed notebook as one email-safe message: its Markdown, code and outputs, in order.

The outputs are rendered exactly as ``%%smtp_send --capture`` renders a cell's outputs
(``render.render_outputs``: images inline by ``cid:``, tables and long streams cut to the size
budget with the whole thing attached). Cells tagged ``remove-cell``, ``remove-input`` /
``hide-input`` and ``remove-output`` / ``hide-output`` (the tags nbconvert and Jupyter Book
honour) are left out accordingly. Reading notebooks needs ``nbformat``.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import InvalidRequest, missing
from .models import Attachment, SendRequest, as_address_list
from .render import Output, email_body, render_outputs

__all__ = ["notebook_outputs", "notebook_request", "read_notebook"]

log = logging.getLogger(__name__)

_CODE_STYLE = ("margin:0 0 6px;padding:6px 8px;background:#f6f8fa;color:#1f2328;"
               "border-left:3px solid #d0d7de;font:12px/1.45 ui-monospace,Menlo,Consolas,monospace;"
               "white-space:pre-wrap")
_PROMPT_STYLE = "margin:10px 0 2px;color:#57606a;font:11px ui-monospace,Menlo,Consolas,monospace"
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)

NotebookLike = str | os.PathLike[str] | Mapping[str, Any]


def read_notebook(notebook: NotebookLike) -> tuple[Any, str]:
    """(the notebook as nbformat v4, its file name) from a path or an nbformat NotebookNode
    (e.g. what ``papermill.execute_notebook`` returns)."""
    if importlib.util.find_spec("nbformat") is None:
        raise missing("nbformat", "Sending a notebook", extra="notebook")
    import nbformat

    if isinstance(notebook, Mapping):
        nb = nbformat.from_dict(notebook)
        output_path = (nb.get("metadata", {}).get("papermill", {}) or {}).get("output_path")
        name = os.path.basename(output_path) if output_path else "notebook.ipynb"
    else:
        path = Path(notebook).expanduser()
        if not path.is_file():
            raise InvalidRequest(f"The notebook {os.fspath(notebook)!r} does not exist.")
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds; one sentence
            detail = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise InvalidRequest(f"The notebook {os.fspath(notebook)!r} cannot be read: "
                                 f"{detail.rstrip('.')}.") from None
        name = path.name
    if nb.get("nbformat", 4) < 4:
        nb = nbformat.convert(nb, 4)
    return nb, name


def _tags(cell: Mapping[str, Any]) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", ()) or ())


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _code_block(source: str, count: Any) -> str:
    prompt = f"In [{count if count is not None else ' '}]:"
    return (f"<div style='{_PROMPT_STYLE}'>{html.escape(prompt)}</div>"
            f"<pre style='{_CODE_STYLE}'>{html.escape(source)}</pre>")


def _output(out: Mapping[str, Any]) -> Output | None:
    kind = out.get("output_type")
    if kind == "stream":
        text = out.get("text", "")
        return Output(kind="stream", name=str(out.get("name", "stdout")),
                      text="".join(text) if isinstance(text, list) else str(text))
    if kind in ("display_data", "execute_result"):
        return Output(kind="display", data=dict(out.get("data", {})),
                      metadata=dict(out.get("metadata", {}) or {}))
    if kind == "error":
        return Output(kind="error", name=str(out.get("ename", "Error")),
                      text="\n".join(out.get("traceback", ()) or
                                     [f"{out.get('ename')}: {out.get('evalue')}"]))
    return None


def notebook_outputs(nb: Any, *, no_input: bool = False) -> list[Output]:
    """The notebook as a list of outputs for ``render_outputs``: Markdown cells and code (as
    rich outputs), and the outputs of the code cells, in order."""
    outputs: list[Output] = []
    for cell in nb.get("cells", ()):
        tags = _tags(cell)
        if "remove-cell" in tags:
            continue
        kind = cell.get("cell_type")
        source = _source(cell)
        if kind == "markdown" and source.strip():
            outputs.append(Output(kind="display", data={"text/markdown": source}))
        elif kind == "code":
            if not no_input and source.strip() and not tags & {"remove-input", "hide-input"}:
                outputs.append(Output(kind="display", data={
                    "text/html": _code_block(source, cell.get("execution_count")),
                    "text/plain": source}))
            if not tags & {"remove-output", "hide-output"}:
                outputs.extend(o for o in map(_output, cell.get("outputs", ())) if o is not None)
    return outputs


def _title(nb: Any, name: str) -> str:
    """The subject when none is given: the notebook's title, its first heading, or its name."""
    title = nb.get("metadata", {}).get("title")
    if title:
        return str(title)
    for cell in nb.get("cells", ()):
        if cell.get("cell_type") == "markdown":
            match = _HEADING.search(_source(cell))
            if match:
                return re.sub(r"[*_`]", "", match.group(1)).strip()
    return Path(name).stem


def _executed(nb: Any) -> bool:
    code = [c for c in nb.get("cells", ()) if c.get("cell_type") == "code" and _source(c).strip()]
    return not code or any(c.get("execution_count") is not None or c.get("outputs") for c in code)


def notebook_request(
    notebook: NotebookLike, to: str | Iterable[str], *, subject: str | None = None,
    cc: str | Iterable[str] | None = None, bcc: str | Iterable[str] | None = None,
    sender: str | None = None, no_input: bool = False, attach_notebook: bool = False,
    attachments: Iterable[Attachment] = (), max_bytes: int | None = None,
) -> SendRequest:
    """The message for an executed notebook: Markdown and outputs, with the code unless
    ``no_input``; the ``.ipynb`` attached when ``attach_notebook``."""
    nb, name = read_notebook(notebook)
    if not _executed(nb):
        raise InvalidRequest(
            f"The notebook {name!r} has not been executed (no outputs): run it first, e.g. "
            f"papermill {name} out.ipynb, or jupyter nbconvert --to notebook --execute {name}.")
    rendered = render_outputs(notebook_outputs(nb, no_input=no_input), max_bytes=max_bytes)
    subject = subject if subject is not None else _title(nb, name)
    files = list(attachments)
    if attach_notebook:
        import nbformat

        files.append(Attachment.from_bytes(name, nbformat.writes(nb).encode("utf-8")))
    body = email_body(rendered, title=subject)  # the layout, within the size budget
    log.debug("notebook %s: %d bytes of HTML, %d images, %d attachments", name,
              len(body.html), len(body.images), len(files) + len(body.attachments))
    return SendRequest(
        to=as_address_list(to), cc=as_address_list(cc), bcc=as_address_list(bcc),
        subject=subject, sender=sender, content_type="text/html", body=body.html,
        inline_images=body.images, attachments=(*body.attachments, *files),
    )
