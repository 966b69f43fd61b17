"""Every setting that an error message or hint of the package names can be set with
%smtp_config, and every option a message recommends exists.

The messages are found in the source: every string literal that is not a docstring (f-string
parts included), so a new message is checked without being listed here. A message naming a
setting the user cannot set (``cafile`` was recommended before ``--cafile`` existed) or an
option that does not exist fails this test.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtp_magic import cli, config
from smtp_magic.magics import SmtpMagics

PACKAGE = Path(config.__file__).parent
# Settings without an option of their own, and how a user sets them instead.
NO_OPTION = {
    "password": ("--password-prompt", "--password-env", "--keyring"),
    # A Python callable cannot be typed on a magic's line: ipython_config.py or the API.
    "oauth2_token_provider": (),
}
# Options of other programs that messages mention (`jupyter nbconvert --execute`...).
FOREIGN_OPTIONS = {"--execute", "--log-level"}
_SNAKE = r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+"
# Where a message says a name is a setting: "set X", "X setting", "(X)" after a limit...
_SETTING_CONTEXT = re.compile(
    rf"\bset(?:ting)?\s+`?({_SNAKE})`?|`?({_SNAKE})`?\s+setting\b|\(({_SNAKE})\)")
_OPTION = re.compile(r"(?<!var\()(?<![\w-])--[a-z][a-z0-9-]*")  # not a CSS var(--name)
_CONFIG_LINE = re.compile(r"%smtp_config((?:\s+--?[a-z][\w-]*(?:\s+[^\s`'\"-][^\s`'\"]*)?)+)")


def message_strings() -> Iterator[tuple[str, int, str]]:
    """(file, line, text) of every string literal in the package that is not a docstring."""
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in docstrings and " " in node.value.strip()):
                yield path.name, node.lineno, node.value


def _options(parser: argparse.ArgumentParser) -> set[str]:
    found = {s for action in parser._actions for s in action.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _options(sub)
    return found


def config_options() -> set[str]:
    return _options(SmtpMagics.smtp_config.parser)


def every_option() -> set[str]:
    magics = (SmtpMagics.smtp_config, SmtpMagics.smtp_send, SmtpMagics.smtp_outbox,
              SmtpMagics.smtp_inbox, SmtpMagics.smtp_compose)
    found = set().union(*(_options(m.parser) for m in magics))
    return found | _options(cli.build_parser())


def option_of(setting: str) -> str | None:
    return next((o.flag for o in config.setting_options() if o.name == setting), None)


def named_settings() -> dict[str, list[str]]:
    """Setting names that appear as words in messages -> where."""
    words = re.compile(r"(?<![\w.$%/-])(" + "|".join(sorted(config.SETTINGS, key=len,
                                                            reverse=True)) + r")(?![\w(/-])")
    found: dict[str, list[str]] = {}
    for name, line, text in message_strings():
        for match in words.finditer(text):
            found.setdefault(match.group(1), []).append(f"{name}:{line}")
    return found


def test_messages_name_settings_at_all() -> None:
    """The scan finds what it is meant to find (else the tests below check nothing)."""
    found = named_settings()
    assert {"attachment_size", "allow_plaintext_auth", "oauth2_client_id", "cafile"} <= set(
        found), sorted(found)


@pytest.mark.parametrize("setting", sorted(named_settings()))
def test_every_setting_a_message_names_has_a_config_option(setting: str) -> None:
    options = config_options()
    if setting in NO_OPTION:
        assert set(NO_OPTION[setting]) <= options
        return
    flag = option_of(setting)
    assert flag is not None and flag in options, (
        f"{setting} is named in messages ({', '.join(named_settings()[setting])}) but "
        f"%smtp_config has no option for it")


def test_names_that_messages_call_settings_are_settings() -> None:
    wrong = []
    for name, line, text in message_strings():
        for match in _SETTING_CONTEXT.finditer(text):
            word = next(g for g in match.groups() if g)
            if word not in config.SETTINGS:
                wrong.append(f"{name}:{line}: {word!r} in {text!r}")
    assert not wrong, "\n".join(wrong)


def test_every_option_a_message_recommends_exists() -> None:
    known = every_option() | FOREIGN_OPTIONS
    options = config_options()
    wrong = []
    for name, line, text in message_strings():
        for option in _OPTION.findall(text):
            if option not in known:
                wrong.append(f"{name}:{line}: {option} in {text!r}")
        for match in _CONFIG_LINE.finditer(text):  # `%smtp_config --x`: an option of that magic
            for option in _OPTION.findall(match.group(1)):
                if option not in options:
                    wrong.append(f"{name}:{line}: %smtp_config {option} in {text!r}")
    assert not wrong, "\n".join(wrong)
