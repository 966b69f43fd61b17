"""The import rules cover everything: every module in a layer, every library with an owner, all kept."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import smtp_magic

PACKAGE = Path(smtp_magic.__file__).parent
ROOT = PACKAGE.parent

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


def contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def layered() -> set[str]:
    """The modules the layers contract places, by their name inside the package."""
    (layers,) = [c for c in contracts() if c["type"] == "layers"]
    assert layers["containers"] == ["smtp_magic"] and layers["exhaustive"] is True
    names = set()
    for layer in layers["layers"]:
        for name in layer.replace(":", "|").split("|"):
            names.add(name.strip().strip("()"))
    return names


def modules() -> list[str]:
    """Every module of the package (a subpackage counts as one module, like the contract)."""
    found = [p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"]
    found += [p.parent.name for p in PACKAGE.glob("*/__init__.py")]
    return sorted(found)


def third_party_imports() -> dict[str, set[str]]:
    """Top-level names of the libraries outside the standard library each module imports."""
    imported: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in ("smtp_magic", "__future__"):
                    imported.setdefault(top, set()).add(path.relative_to(ROOT).as_posix())
    return imported


def test_every_module_of_the_package_sits_in_a_layer():
    missing = [name for name in modules() if name not in layered()]
    assert not missing, (
        f"smtp_magic modules missing from the layers contract in pyproject.toml: "
        f"{', '.join(f'smtp_magic.{name}' for name in missing)}; put each in the layer its "
        f"imports allow (faces > api, CLI > transport > rendering > composition > settings)"
    )
    gone = sorted(layered() - set(modules()))
    assert not gone, f"the layers contract lists modules that do not exist: {', '.join(gone)}"


def test_every_third_party_library_the_package_imports_has_owners():
    protected = set()
    for contract in contracts():
        assert not contract.get("allow_indirect_imports"), contract["name"]
        if contract["type"] == "protected":
            protected.update(contract["protected_modules"])
    unowned = {lib: files for lib, files in third_party_imports().items() if lib not in protected}
    assert not unowned, (
        f"libraries imported without a 'protected' contract naming the modules that own them: "
        f"{unowned}"
    )


def test_the_import_contracts_are_kept():
    lint = str(Path(sys.executable).with_name("lint-imports"))
    if not Path(lint).exists():
        lint = shutil.which("lint-imports") or lint
    if not Path(lint).exists():
        pytest.skip("import-linter is not installed (pip install import-linter)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([lint, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=False,
                         timeout=300)
    report = run.stdout[run.stdout.find("Contracts"):]
    assert run.returncode == 0, report[-6000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_the_readmes_drawing_is_the_layers_contract():
    readme = (ROOT / "README.md").read_text()
    drawing = readme.split("each module of the package is on exactly one line:", 1)[1]
    drawing = drawing.split("```text\n", 1)[1].split("```", 1)[0]
    drawn = [re.split(r"\s{2,}", line)[0].split() for line in drawing.splitlines()]
    (layers,) = [c for c in contracts() if c["type"] == "layers"]
    assert [[w for w in words if w != "|"] for words in drawn] == [
        [name.strip() for name in layer.split("|")] for layer in layers["layers"]]
