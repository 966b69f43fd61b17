"""An executed notebook as one email-safe message: its Markdown, code and outputs, in order.

The outputs are rendered exactly as ``%%smtp_send --capture`` renders a cell's outputs
(``render.render_outputs``: images inline by ``cid:``, tables and long streams cut to the size
budget with the whole thing attached). Cells tagged ``remove-cell``, ``remove-input`` /
``hide-input`` and ``remove-output`` / ``hide-output`` (the tags nbconvert and Jupyter Book
honour) are left out accordingly. Reading notebooks needs ``nbformat``.
"""

from __future__ import annotations

import ast
import html
import importlib.util
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import InvalidRequest, missing
from .models import Attachment, SendRequest, as_address_list
from .render import Output, cell_paths, email_body, render_outputs

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


def _cell_name(cell: Mapping[str, Any], position: int) -> str:
    """As the notebook shows it: "cell [5]" by its execution count, else "cell 3" (its place)."""
    count = cell.get("execution_count")
    return f"cell [{count}]" if isinstance(count, int) else f"cell {position}"


# ipykernel names a cell's code /tmp/ipykernel_<pid>/<murmur2 hash of the source>.py: warnings
# and tracebacks show that path. The same hash of each cell's source finds the cell again.
_HASH_SEED = 0xC70F6907


def _murmur2(text: str, seed: int = _HASH_SEED) -> int:
    """MurmurHash2 (x86, 32 bit) of the UTF-8 bytes, as ipykernel.compiler.murmur2_x86."""
    data = text.encode("utf-8")
    m, length = 0x5BD1E995, len(data)
    h = seed ^ length
    end = length & ~3
    for i in range(0, end, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[end:]
    if tail:
        h ^= int.from_bytes(tail, "little")
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


_TITLE_CALLS = frozenset({"title", "set_title", "suptitle"})
_LABEL_CALLS = {"xlabel": "x", "set_xlabel": "x", "ylabel": "y", "set_ylabel": "y"}


def _figure_titles(source: str) -> list[str]:
    """What the cell's code calls its figures, in order: ``plt.title("…")``, ``title="…"``
    (pandas, Altair, Plotly), else "y by x" from its axis labels. Empty if it cannot tell."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    titles: list[str] = []
    labels: dict[str, str] = {}
    for node in sorted((n for n in ast.walk(tree) if isinstance(n, ast.Call)),
                       key=lambda n: (n.lineno, n.col_offset)):
        name = (node.func.attr if isinstance(node.func, ast.Attribute)
                else node.func.id if isinstance(node.func, ast.Name) else "")
        first = node.args[0] if node.args else None
        text = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) \
            else None
        if name in _TITLE_CALLS and text and text.strip():
            titles.append(text.strip())
        elif name in _LABEL_CALLS and text and text.strip():
            labels.setdefault(_LABEL_CALLS[name], text.strip())
        for keyword in node.keywords:
            value = keyword.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str) \
                    and value.value.strip():
                if keyword.arg == "title":
                    titles.append(value.value.strip())
                elif keyword.arg in ("xlabel", "ylabel"):
                    labels.setdefault(keyword.arg[0], value.value.strip())
    if titles:
        return list(dict.fromkeys(titles))
    if "x" in labels and "y" in labels:
        return [f"{labels['y']} by {labels['x']}"]
    return [labels[k] for k in ("y", "x") if k in labels][:1]


def _shown_variable(source: str) -> str:
    """The variable a cell ends with (``fig``, ``chart``): what its result shows."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                     for line in source.splitlines())
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return ""
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr) and isinstance(last.value, ast.Name):
        return last.value.id
    return ""


_IMAGES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")


def _is_picture(out: Output) -> bool:
    return out.kind == "display" and (
        any(mime in out.data for mime in _IMAGES)
        or any("vega" in mime or "plotly" in mime for mime in out.data)
        or "vegaEmbed" in str(out.data.get("text/html", "")))


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
    cells = {str(_murmur2(_source(c))): _cell_name(c, i)
             for i, c in enumerate(nb.get("cells", ()), 1) if c.get("cell_type") == "code"}

    def where(path: str, digest: str) -> tuple[str, int] | None:
        return (cells[digest], 0) if digest in cells else None

    for position, cell in enumerate(nb.get("cells", ()), 1):
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
                outputs.extend(_cell_outputs(cell, _cell_name(cell, position), where))
    return outputs


def _cell_outputs(cell: Mapping[str, Any], name: str, where: Any) -> list[Output]:
    """A code cell's outputs, named after the cell; its pictures titled as its code titles
    them (alt text, file names); kernel file paths in its streams named as cells."""
    titles = iter(_figure_titles(_source(cell)))
    variable = _shown_variable(_source(cell))
    found = []
    for raw in cell.get("outputs", ()):
        out = _output(raw)
        if out is None:
            continue
        out = replace(out, cell=name)
        if out.kind in ("stream", "error"):
            out = replace(out, text=cell_paths(out.text, where))
        elif _is_picture(out):
            out = replace(out, title=next(titles, ""),
                          # the cell's result is the variable it ends with
                          variable=variable if raw.get("output_type") == "execute_result" else "")
        found.append(out)
    return found


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
    reply_to: str | Iterable[str] | None = None,
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
        reply_to=as_address_list(reply_to),
    )
