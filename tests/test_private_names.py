"""Private names of other libraries appear only in smtp_magic/_shortcuts.py (a scan of the AST)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

import pytest

import smtp_magic

PACKAGE = Path(smtp_magic.__file__).parent
BOUNDARY = "_shortcuts.py"
# Names with a leading underscore that their library documents as public: namedtuple's API.
DOCUMENTED = {"_asdict", "_replace", "_fields", "_field_defaults", "_make"}
# Internals without an underscore (in neither the library's documentation nor its __all__).
KNOWN_INTERNALS = {
    "dkim": {"fold", "select_headers", "RE_BTAG", "gen_header", "hasher"},
}


def private(name: str) -> bool:
    """``_name`` (not ``__dunder__``, not an IPython-style ``_repr_html_`` protocol name)."""
    return (name.startswith("_") and not name.startswith("__") and not name.endswith("_")
            and name not in DOCUMENTED)


def internal(library: str, name: str) -> bool:
    return private(name) or name in KNOWN_INTERNALS.get(library.partition(".")[0], ())


class Scan(ast.NodeVisitor):
    """Where a module reaches into another library: ``lib._name`` (also on an object a library
    call made), ``from lib import _name``, ``getattr(obj, "_name")``, and the known internals."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.external: dict[str, str] = {}  # a local name -> the library it comes from
        self.found: list[str] = []

    def report(self, node: ast.AST, what: str) -> None:
        self.found.append(f"{self.path.name}:{getattr(node, 'lineno', 0)}: {what}")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.partition(".")[0] == "smtp_magic":
                continue
            self.external[alias.asname or alias.name.partition(".")[0]] = alias.name
            if any(private(part) for part in alias.name.split(".")):
                self.report(node, f"import {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module or node.module.partition(".")[0] == "smtp_magic":
            return
        if any(private(part) for part in node.module.split(".")):
            self.report(node, f"from {node.module} import ...")
        for alias in node.names:
            if internal(node.module, alias.name):
                self.report(node, f"from {node.module} import {alias.name}")
            self.external[alias.asname or alias.name] = node.module

    def visit_Assign(self, node: ast.Assign) -> None:
        # An object a library's callable made is the library's: signer = dkim.DKIM(...).
        made_by = self.root(node.value.func) if isinstance(node.value, ast.Call) else None
        if made_by in self.external:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    self.external[target.id] = self.external[made_by]
        self.generic_visit(node)

    @staticmethod
    def root(node: ast.AST) -> str | None:
        while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
            node = node.func if isinstance(node, ast.Call) else node.value
        return node.id if isinstance(node, ast.Name) else None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        root = self.root(node)
        if root in self.external and internal(self.external[root], node.attr):
            self.report(node, f"{ast.unparse(node)} ({root} is from {self.external[root]})")
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        # A parameter named like an imported library is not that library inside the function.
        args = node.args
        names = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
        names |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
        shadowed = {name: self.external.pop(name) for name in names if name in self.external}
        self.generic_visit(node)
        for name in names:
            self.external.pop(name, None)
        self.external.update(shadowed)

    visit_AsyncFunctionDef = visit_Lambda = visit_FunctionDef  # type: ignore[assignment]

    def resolve(self, node: ast.expr) -> Any:
        """The library class a base-class expression names, or None when not importable here."""
        parts = ast.unparse(node).split(".")
        module = self.external.get(parts[0])
        if module is None:
            return None
        try:
            value: Any = importlib.import_module(module)
            if module.rpartition(".")[2] != parts[0]:  # from module import Name
                value = getattr(value, parts[0])
            for part in parts[1:]:
                value = getattr(value, part, None) or importlib.import_module(
                    f"{value.__name__}.{part}")
        except Exception:  # noqa: BLE001 - an optional library that is not installed here
            return None
        return value

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        # A subclass of a library's class: a private name of that class it uses or overrides.
        bases = [(self.external[root], self.resolve(base)) for base in node.bases
                 if (root := self.root(base)) in self.external]
        if bases:
            body = [n for n in ast.walk(node) if n is not node]
            defined = {n.name for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            stored = {n.attr for n in body if isinstance(n, ast.Attribute)
                      and isinstance(n.ctx, ast.Store)}

            def theirs(name: str) -> str | None:
                for library, cls in bases:
                    if cls is None or hasattr(cls, name):
                        return library
                return None

            for n in body:
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and private(n.name):
                    if library := theirs(n.name):
                        self.report(n, f"{node.name}.{n.name} overrides a private method of "
                                       f"{library}")
                elif (isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Load)
                        and isinstance(n.value, ast.Name) and n.value.id == "self"
                        and private(n.attr) and n.attr not in defined | stored
                        and (library := theirs(n.attr))):
                    self.report(n, f"self.{n.attr} (inherited from {library})")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func, args = node.func, node.args
        if (isinstance(func, ast.Name) and func.id in ("getattr", "hasattr", "setattr", "delattr")
                and len(args) >= 2 and isinstance(args[1], ast.Constant)
                and isinstance(args[1].value, str) and private(args[1].value)
                and not (isinstance(args[0], ast.Name) and args[0].id in ("self", "cls"))):
            self.report(node, ast.unparse(node))
        self.generic_visit(node)


def leaks(path: Path) -> list[str]:
    scan = Scan(path)
    scan.visit(ast.parse(path.read_text(), str(path)))
    return scan.found


def test_private_names_of_other_libraries_appear_only_in_the_shortcuts_module():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) if path.name != BOUNDARY
             for hit in leaks(path)]
    assert found == [], ("move each into a named function of smtp_magic/_shortcuts.py:\n"
                         + "\n".join(found))


@pytest.mark.parametrize("source, expected", [
    ("import ipykernel\nipykernel.kernelbase._allow_stdin", "ipykernel.kernelbase._allow_stdin"),
    ("from matplotlib import figure as f\nf._suptitle", "f._suptitle"),
    ("from email.contentmanager import _encode_text", "import _encode_text"),
    ("import asyncio._x", "import asyncio._x"),
    ("import dkim\ndkim.RE_BTAG.sub(b'', b'')", "dkim.RE_BTAG"),
    ("import dkim\ns = dkim.DKIM(b'')\ns.gen_header()", "s.gen_header"),
    ("import dkim\ns = dkim.DKIM(b'')\ns._hasher", "s._hasher"),
    ("from dkim import fold", "from dkim import fold"),
    ("def f(kernel):\n    return getattr(kernel, '_allow_stdin', True)", "'_allow_stdin'"),
    ("def f(dkim):\n    return dkim.fold", None),  # a parameter, not the library
    (("from aiosmtpd.controller import Controller\nclass C(Controller):\n"
      "    def _create_server(self):\n        pass"), "C._create_server overrides"),
    (("import aiosmtpd.controller\nclass C(aiosmtpd.controller.Controller):\n"
      "    def f(self):\n        return self._factory_invoker"), "self._factory_invoker"),
    (("import imaplib\nclass C(imaplib.IMAP4):\n    def _f(self):\n"
      "        self._mine = 1\n        return self._mine, self._f"), None),  # its own names
])
def test_the_scan_finds_each_kind_of_reach(tmp_path, source, expected):
    path = tmp_path / "probe.py"
    path.write_text(source)
    found = leaks(path)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0], found


def test_the_scan_leaves_our_own_and_documented_names_alone(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text(
        "import collections\nimport dkim.crypto\nfrom dkim.crypto import parse_private_key\n"
        "from IPython import get_ipython\nfrom . import _shortcuts\n_shortcuts._checked\n"
        "class A:\n    def f(self):\n        return getattr(self, '_x', None), self._y\n"
        "p = collections.namedtuple('P', 'a')(1)._asdict()\nobj = object()\n"
        "getattr(obj, '_repr_html_', None)\ncollections.__name__\n"
    )
    assert leaks(path) == []
