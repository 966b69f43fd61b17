"""The IPython magics: %smtp_config, %%smtp_send, %smtp_outbox, %smtp_inbox and %smtp_compose."""

from __future__ import annotations

import argparse
import getpass
import logging
import re
import shlex
import threading
import weakref
from collections import ChainMap
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from . import _kernel, api, config
from ._configure import change_settings
from ._relay import Relay
from ._views import (
    Block,
    Inbox,
    failure_error,
    latest_failures,
    outbox_table,
    settings_table,
    undelivered,
    visible,
)
from .attachments import resolve_all
from .config import SmtpMagic, current
from .errors import SmtpMagicError
from .models import MESSAGE_OPTIONS, Attachment, SendRequest
from .outbox import history

__all__ = ["SmtpMagics", "load_ipython_extension", "unload_ipython_extension"]

log = logging.getLogger(__name__)

# -- the line: shell-style words, each expanded on its own -----------------------------------------
#
# IPython expands {expr} and $name in the whole line and, when any part fails, keeps the whole line
# as typed: `--to {addr} --subject "Up $5M"` would then send to the literal "{addr}". The magics
# opt out (@no_var_expand) and expand with IPython's syntax, but field by field:
#   - a field that fails to evaluate is kept as typed ("$5M" stays "$5M"); {{, }} and $$ escape;
#   - as in IPython, $name is not expanded inside single quotes ({expr} is);
#   - a `{expr}` is Python, not shell: its quotes and spaces stay as typed (`{', '.join(team)}`);
#   - a word that is only `{expr}`/`$name` and evaluates to a list, tuple, set, pandas Series or
#     other iterable gives one argument per item (`--to {team}`, `--to {df.email}`), and a value
#     with spaces stays one argument (`--subject {title}`).
# `--each` expands the options once per row, with the row's columns before notebook variables.

# The pieces of a word: an escape, {{ or }}, a {expr} field (kept as typed), a plain character,
# a single-quoted or a double-quoted string.
_PIECE = r"""\\.|\{\{|\}\}|\{[^{}\n]*\}|[^\s'"\\]|'[^']*'|"(?:\\.|[^"\\])*" """.strip()
_WORD = re.compile(f"(?:{_PIECE})+", re.DOTALL)
_PIECES = re.compile(_PIECE, re.DOTALL)
_BRACES = re.compile(r"\{\{|\}\}|\{[^{}\n]*\}")
_NAME = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_FIELD = re.compile(r"\{\{|\}\}|\$\$|\{([^{}]+)\}|\$(" + _NAME + ")")
_BRACE_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]+)\}()")
_WHOLE_FIELD = re.compile(r"\{([^{}]+)\}|\$(" + _NAME + ")")


def split_words(line: str) -> list[tuple[str, bool]]:
    """Shell-style words of ``line``, each with whether ``$name`` may be expanded in it.

    As in a shell, a word that starts with an unquoted ``#`` starts a comment
    (``%smtp_config --local  # the capture server``).
    """
    comment = next((m.start() for m in _WORD.finditer(line) if m.group(0).startswith("#")), None)
    if comment is not None:
        line = line[:comment]
    try:
        shlex.split(_BRACES.sub("x", line))  # checks the quoting, with shlex's own messages
    except ValueError as exc:
        raise UsageError(f"The options cannot be split into words: {exc}.") from None
    words = []
    for match in _WORD.finditer(line):
        text, single_quoted = [], False
        for piece in _PIECES.findall(match.group(0)):
            if piece[0] == "{" or piece == "}}":
                text.append(piece)  # Python inside braces: no shell unquoting
            elif piece[0] == "'":
                single_quoted = True
                text.append(piece[1:-1])
            else:
                text.append("".join(shlex.split(piece)) if piece[0] in "\"\\" else piece)
        words.append(("".join(text), not single_quoted))
    return words


def expand_word(word: str, namespace: Mapping[str, Any], dollar: bool = True) -> list[str]:
    """``{expr}`` (and ``$name`` if ``dollar``) in one word, evaluated in ``namespace``;
    a field that fails stays as typed."""
    if "{" not in word and not (dollar and "$" in word):
        return [word]
    scope = dict(namespace)

    def evaluate(expr: str) -> Any:
        return eval(expr, scope)

    whole = _WHOLE_FIELD.fullmatch(word)
    if whole and (dollar or whole.group(1)):
        try:
            value = evaluate(whole.group(1) or whole.group(2))
        except Exception:  # noqa: BLE001 - kept as typed
            return [word]
        return [str(v) for v in _items(value)]

    def field(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}", "$$"):
            return token[0]
        try:
            return str(evaluate(match.group(1) or match.group(2)))
        except Exception:  # noqa: BLE001 - kept as typed
            return token

    return [(_FIELD if dollar else _BRACE_FIELD).sub(field, word)]


def _items(value: Any) -> list[Any]:
    """The arguments one ``{expr}`` gives: each item of a list, tuple, set, Series or other
    collection (a set in sorted order), else the value itself."""
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        return [value]
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    try:
        return list(value)
    except TypeError:  # an object with __iter__ = None and the like
        return [value]


def expand_words(words: list[tuple[str, bool]], namespace: Mapping[str, Any]) -> list[str]:
    return [out for word, dollar in words for out in expand_word(word, namespace, dollar)]


def parse_argv(magic: Callable[..., Any], argv: list[str]) -> argparse.Namespace:
    """Parse with the magic's parser; a bad option is a plain UsageError with the usage."""
    parser = magic.parser  # type: ignore[attr-defined]
    try:
        return parser.parse_args(argv)  # type: ignore[no-any-return]
    except UsageError as exc:
        lines = [ln for ln in parser.format_usage().splitlines() if ln.strip() not in ("", "::")]
        usage = "\n".join([f"Usage: {lines[0].strip()}", *lines[1:]])
        raise UsageError(f"{exc}\n{usage}\nSee %{parser.prog}? for help.") from None


def _usage_error(exc: SmtpMagicError, prefix: str = "") -> UsageError:
    return UsageError(visible(prefix + exc.message))  # it can quote a server's reply


def setting_arguments(func: Callable[..., Any]) -> Callable[..., Any]:
    """``%smtp_config``'s option for every setting, derived from ``SmtpMagic``'s traits."""
    kinds: dict[type, dict[str, Any]] = {
        bool: {"action": argparse.BooleanOptionalAction},
        int: {"type": int}, float: {"type": float}, str: {},
    }
    for option in reversed(config.setting_options()):
        kwargs = dict(kinds[option.kind], dest=option.name, default=None, help=option.help)
        if option.choices:
            kwargs["choices"] = option.choices
        if option.metavar and option.kind is not bool:
            kwargs["metavar"] = option.metavar
        func = argument(option.flag, **kwargs)(func)
    return func


def message_arguments(func: Callable[..., Any], *, required: bool = True) -> Callable[..., Any]:
    """``%%smtp_send``'s message options, from the table ``smtp-magic send-notebook`` and the
    form use too; ``required``: --to must be given (``%smtp_compose`` only prefills)."""
    for option in reversed(MESSAGE_OPTIONS):
        func = argument(option.flag, required=required and option.flag == "--to",
                        **option.argparse_kwargs())(func)
    return func


def prefill_arguments(func: Callable[..., Any]) -> Callable[..., Any]:
    """``%smtp_compose``'s options: the message options, none of them required."""
    return message_arguments(func, required=False)


# -- %%smtp_send helpers -----------------------------------------------------------------------------

def rows_of(value: Any, name: str) -> list[dict[str, Any]]:
    """The rows of ``--each VAR``: a DataFrame's records, or an iterable's items."""
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a DataFrame, without importing pandas
        records = value.to_dict(orient="records")
        return [{"row": rec, **{str(k): v for k, v in rec.items()}} for rec in records]
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise UsageError(f"--each {name}: expected a DataFrame or an iterable of rows, "
                         f"not {type(value).__name__}.")
    rows = []
    for item in value:
        if isinstance(item, Mapping):
            columns = dict(item)
        elif hasattr(item, "_asdict"):  # a namedtuple
            columns = item._asdict()
        else:
            columns = {}
        rows.append({"row": item, **{str(k): v for k, v in columns.items()}})
    return rows


def build_request(args: argparse.Namespace, rendered: Any, content_type: str,
                  attachments: list[Attachment]) -> SendRequest:
    """The request for one message from the parsed options and the rendered body."""
    from .render import email_body

    # The message options' fields (to, cc, bcc, sender, reply_to), as models.MESSAGE_OPTIONS
    # declares them; the attachments come resolved.
    common: dict[str, Any] = {o.dest: getattr(args, o.dest) for o in MESSAGE_OPTIONS
                              if o.dest != "attach" and getattr(args, o.dest, None) is not None}
    common["subject"] = args.subject
    if content_type == "text/plain":
        text = rendered.text
        if text is None:
            from .htmltext import html_to_text

            text = html_to_text(rendered.html)
        return SendRequest(**common, body=text, content_type="text/plain",
                           attachments=tuple(attachments))
    body = email_body(rendered, title=args.subject)  # the layout, within the size budget
    return SendRequest(
        **common, body=body.html, content_type="text/html", inline_images=body.images,
        attachments=(*body.attachments, *attachments),
    )


def _attached_values(specs: list[str], scope: Mapping[str, Any]
                     ) -> tuple[list[Attachment], list[tuple[Any, str]]]:
    """The attachments of ``--attach``, and (value, file name) for each notebook value among
    them: a table of that value shortened in the body names this file instead of adding a copy."""
    attachments: list[Attachment] = []
    attached: list[tuple[Any, str]] = []
    for spec in specs:
        found = resolve_all([spec], scope)
        attachments.extend(found)
        var = spec.partition(":")[0]
        if var.isidentifier() and var in scope and len(found) == 1:
            attached.append((scope[var], found[0].filename))
    return attachments, attached


# -- the magics ------------------------------------------------------------------------------------

@magics_class
class SmtpMagics(Magics):
    """Send email from notebook cells with the settings of ``SmtpMagic`` (``%config SmtpMagic``)."""

    @property
    def user_ns(self) -> dict[str, Any]:
        assert self.shell is not None
        return self.shell.user_ns  # type: ignore[no-any-return]

    def _parse(self, magic: Callable[..., Any], line: str) -> argparse.Namespace:
        return parse_argv(magic, expand_words(split_words(line), self.user_ns))

    # -- %smtp_config --
    @no_var_expand
    @magic_arguments()
    @setting_arguments
    @argument("--password-prompt", action="store_true",
              help="Ask for the password (never stored in the notebook).")
    @argument("--save", action="store_true",
              help="With --profile NAME: save the settings (without the password) as that "
                   "profile, in profiles.json in the user's config folder.")
    @argument("--file", metavar="PATH", help="Load a JSON configuration (the connector's format).")
    @argument("--local", action="store_true",
              help="Start the built-in capture server here and send to it (no login).")
    @argument("--check", action="store_true",
              help="Connect, negotiate TLS and log in; report the server's capabilities. Sends nothing.")
    @argument("--oauth2-login", action="store_true",
              help="Sign in with OAuth2 now: shows a URL and a code to enter there, then waits.")
    @argument("--oauth2-logout", action="store_true",
              help="Forget (and revoke) the saved OAuth2 sign-in.")
    @argument("--deliverability", action="store_true",
              help="With --check: instead of connecting, look up the sender domain's SPF, DKIM "
                   "key and DMARC policy in DNS and say what receiving providers will conclude.")
    @line_magic
    def smtp_config(self, line: str = "") -> None:
        """Show or change the SMTP settings (the ``SmtpMagic`` configurable).

        Without options, shows the settings with the password masked. Every setting has an
        option (``--port 587``, ``--from ADDR``, ``--no-validate-certs``...); they apply on top
        of ``c.SmtpMagic.*``, the ``SMTP_*`` environment and ``--file``. Every option accepts
        ``{expr}``/``$name`` expansion, e.g. ``%smtp_config --port {port}``.
        """
        args = self._parse(self.smtp_config, line)
        settings = current()
        if args.password_env and (args.use_keyring or args.password_prompt):
            raise UsageError("--password-env cannot be combined with --keyring or --password-prompt.")
        if args.local and (args.host is not None or args.port is not None):
            raise UsageError("--local sends to the built-in capture server, on a port of its own: "
                             "leave out --host and --port.")
        values = {option.name: getattr(args, option.name) for option in config.setting_options()
                  if getattr(args, option.name) is not None}
        profile = values.pop("profile", None)
        if args.save and not profile:
            raise UsageError("--save needs the name to save under: --profile NAME --save.")
        server = None
        if args.local:
            from .server import local_server

            server = local_server()
        try:
            if args.use_keyring:
                from .credentials import check_keyring

                check_keyring()  # no backend (a headless Linux box): say so now, change nothing
            changed = change_settings(
                settings, values, profile=profile, file=args.file, save=args.save,
                local=(server.host, server.port) if server is not None else None,
                password=partial(self._prompt_password, keyring=bool(args.use_keyring))
                if args.password_prompt else None)
        except SmtpMagicError as exc:
            raise _usage_error(exc) from None
        restored, withheld, saved = changed.restored, changed.withheld, changed.saved
        if restored:
            shown = dict(settings.describe())
            print("Not the capture server any more, so what --local had set is back: "
                  + ", ".join(f"{name} {shown[name]}" for name in restored) + ".")
        if withheld is not None:  # a password goes only to the server it was given for
            print(withheld.message(settings))
        if saved is not None:
            note = (" The password is not in it: next time give it with --password-prompt, or "
                    "save the profile with --password-env VAR or --keyring."
                    if settings.password else "")
            print(f"Saved the settings as profile {profile!r} in {saved}.{note}")
        elif profile:
            who = f" as {settings.username}" if settings.username else ""
            print(f"Using profile {profile!r}: {settings.host}:{settings.port}{who}.")
        if server is not None:
            print(f"Sending to the capture server at {server.host}:{server.port}; messages are "
                  f"stored in {server.maildir} (see %smtp_inbox).")
        if args.oauth2_logout or args.oauth2_login:
            self._oauth2(settings, login=args.oauth2_login)
        if args.deliverability and not args.check:
            raise UsageError("--deliverability goes with --check: %smtp_config --check "
                             "--deliverability.")
        if args.check:
            try:
                report = api.check_deliverability(settings) if args.deliverability \
                    else api.check(settings)
            except SmtpMagicError as exc:
                raise _kernel.one_line(exc) from None
            print(visible("\n".join(report.lines())))  # the greeting is the server's text
        if not line.strip():
            display(settings_table(settings))  # the password masked

    def _oauth2(self, settings: SmtpMagic, *, login: bool) -> None:
        try:
            if not login:
                found = api.oauth2_logout(settings)
                print("Signed out: the saved OAuth2 sign-in was removed." if found
                      else "There was no saved OAuth2 sign-in.")
                return
            if _kernel.is_headless(self.shell):
                raise UsageError("--oauth2-login needs someone to enter the code: run it once in "
                                 "an interactive session; headless runs then use the saved "
                                 "sign-in.")
            status = api.oauth2_login(settings, show=display)
        except SmtpMagicError as exc:
            raise _kernel.one_line(exc) from None
        print(status.describe())

    def _ask_withheld_password(self, settings: SmtpMagic, also: SmtpMagic | None) -> None:
        """Where someone can answer (a front end with stdin), ask for the password of this
        server when the one given was for another, instead of failing the send (exit 3)."""
        withheld = config.withheld_password(settings)
        if withheld is None or _kernel.is_headless(self.shell) is not False:
            return
        here = config.login_origin(settings.host, settings.port, settings.username)
        try:
            password = getpass.getpass(f"Password for {here} (the one given was for "
                                       f"{withheld.given_for}): ")
        except (NotImplementedError, EOFError):
            return  # the send says what to do (exit 3)
        if not password:
            raise UsageError(f"No password was entered for {here}; nothing was sent.")
        settings.password = password  # for this server only, as any password
        if also is not None and config.withheld_password(also) == withheld:
            also.password = password  # the session's settings: asked once

    @staticmethod
    def _prompt_password(staged: SmtpMagic, *, keyring: bool) -> None:
        try:
            password = getpass.getpass(f"Password for {staged.username or 'the SMTP login'}: ")
        except (NotImplementedError, EOFError):  # ipykernel without stdin: papermill, nbval
            raise UsageError("--password-prompt needs a front end that can ask for input; in a "
                             "headless run use --password-env VAR or --keyring.") from None
        if not password:
            raise UsageError("No password was entered; nothing changed.")
        if keyring:
            from .credentials import store_in_keyring

            store_in_keyring(staged.snapshot(), password)
        else:
            staged.password = password

    # -- %%smtp_send --
    @no_var_expand
    @magic_arguments(name="%smtp_send")  # the usage line shows %%smtp_send
    @message_arguments  # --to --cc --bcc --from --attach (models.MESSAGE_OPTIONS)
    @argument("--subject", required=True, metavar="S", help="The subject.")
    @argument("--content-type", choices=config.body_formats(),
              help="The body's type (default: the content_type setting).")
    @argument("--capture", action="store_true",
              help="Run the cell as code; its outputs (shown as usual) are the body.")
    @argument("--sync", action="store_true", help="Wait for the outcome; a failed send fails the cell.")
    @argument("--preview", action="store_true", help="Show the message as it will arrive; send nothing.")
    @argument("--each", metavar="VAR",
              help="One message per row of a DataFrame (or item of an iterable).")
    @argument("--template", metavar="FILE",
              help="A Jinja template file the cell extends: the cell fills its {%% block %%}s "
                   "and sets variables; {%% include %%} finds files next to it.")
    @argument("--no-template", action="store_true",
              help="Send the cell as written, without Jinja: {{ }} and {%% %%} arrive literally "
                   "(e.g. a Vue or Handlebars snippet).")
    @argument("--profile", metavar="NAME",
              help="Send with this saved profile's settings (see %%smtp_config --profile).")
    @argument("--debug", action="store_true",
              help="Show the SMTP conversation of this send (logins redacted).")
    @argument("--unsubscribe", metavar="URL",
              help="One-click unsubscribe link (https; RFC 8058), a Jinja template rendered "
                   "per row with --each, e.g. 'https://example.com/u?id={{ id }}'.")
    @cell_magic
    def smtp_send(self, line: str, cell: str) -> None:
        """Email the cell: a Jinja template rendered with the notebook's variables.

        ``{{ df }}`` puts a DataFrame in as a table, ``{{ fig }}`` a matplotlib figure as an
        inline image; other values are HTML-escaped. Options accept ``{expr}``/``$name``
        (``--to {addr}``), field by field: one that fails stays as typed (``"$5M"``), and
        ``$name`` is not expanded in single quotes. With ``--each df``, the options are expanded
        and the template rendered once per row, with the row's columns (and ``row``) shadowing
        notebook variables; all messages go out over reused connections, with a progress bar.

        The send is asynchronous in a notebook: the cell returns at once and a status line updates
        in place. In headless runs (papermill, nbval, nbconvert: no stdin) and in a terminal it
        waits, and a failure fails the cell; ``--sync`` or ``%config SmtpMagic.send_mode`` force
        either. The send is kept as ``smtp_last``: ``await smtp_last`` gives its Response (a list
        with ``--each``), ``smtp_last.result()`` blocks for it. ``%smtp_outbox --wait`` waits
        for every send.
        """
        ns = self.user_ns
        words = split_words(line)
        shape = parse_argv(self.smtp_send, [w for w, _ in words])  # which options, before expanding
        # The session's settings as they are, or a copy for what this cell changes in them. (A
        # send reads them only while the cell runs: what it sends with is their snapshot.)
        settings = current()
        try:
            if shape.profile or shape.debug:
                settings = settings.copy()
            if shape.profile:
                name = (expand_words([(shape.profile, True)], ns) or [shape.profile])[0]
                settings.update({"profile": name}, source="--profile")
            if shape.debug:
                settings.update({"debug": True}, source="--debug")
        except SmtpMagicError as exc:
            raise _usage_error(exc) from None
        if not shape.preview:
            self._ask_withheld_password(settings, also=None if shape.profile else current())
        content_type = shape.content_type or settings.content_type
        if content_type == "multipart/alternative":
            content_type = "text/html"
        rows: list[dict[str, Any]] = [{}]
        if shape.each:
            if shape.each not in ns:
                raise UsageError(f"--each {shape.each}: no such variable in the notebook.")
            rows = rows_of(ns[shape.each], shape.each)
            if not rows:
                raise UsageError(f"--each {shape.each} has no rows: nothing to send.")
        if shape.capture and shape.template:
            raise UsageError("--capture and --template do not go together: with --capture the "
                             "cell is code, not a template.")
        if shape.no_template and (shape.capture or shape.template):
            raise UsageError(f"--no-template and {'--capture' if shape.capture else '--template'}"
                             " do not go together: --no-template sends the cell as written.")
        captured = self._capture(cell) if shape.capture else None
        built = [self._request(words, cell, row, settings, content_type, captured,
                               i if shape.each else None) for i, row in enumerate(rows)]
        requests, composed = [r for r, _, _ in built], [c for _, _, c in built]
        # What the sender should know: objects that fell back, what sanitising removed.
        warnings = list(dict.fromkeys(w for _, r, _ in built for w in r.warnings))
        removed = list(dict.fromkeys(w for _, r, _ in built for w in r.removed))
        if shape.preview:
            self._preview(requests, composed, warnings, removed)
            return
        block = _kernel.should_block(self.shell, settings, shape.sync)
        try:
            job = _kernel.start_send(self.shell, requests, settings, block=block,
                                     many=bool(shape.each), composed=composed, notes=warnings)
        except _kernel.SendInterrupted as exc:  # the send goes on: keep it reachable
            ns["smtp_last"] = exc.job
            raise
        ns["smtp_last"] = job
        error = job.error() if block else None
        if error is not None:
            raise _kernel.one_line(error)

    def _request(self, words: list[tuple[str, bool]], cell: str, row: dict[str, Any],
                 settings: SmtpMagic, content_type: str, captured: Any, index: int | None
                 ) -> tuple[SendRequest, Any, Any]:
        """One message: the options expanded and the template rendered with ``row`` first;
        returns the request, its rendering and the message composed from it."""
        from .render import render_option, render_template

        ns = self.user_ns
        scope: Mapping[str, Any] = ChainMap(row, ns) if row else ns
        where = f"Row {index}: " if index is not None else ""
        args = parse_argv(self.smtp_send, expand_words(words, scope))
        try:
            attachments, attached = _attached_values(args.attach or [], scope)
            rendered = captured or render_template(cell, scope, content_type,
                                                   template=args.template,
                                                   jinja=not args.no_template, attached=attached)
            request = build_request(args, rendered, content_type, attachments)
            if args.unsubscribe:  # a Jinja template as typed, else as {}-expanded
                raw = parse_argv(self.smtp_send, [w for w, _ in words]).unsubscribe
                request = request.replace(unsubscribe=render_option(
                    "--unsubscribe", raw, scope) if "{{" in raw or "{%" in raw else args.unsubscribe)
            composed = api.build_message(request, config=settings)  # every input error first
        except SmtpMagicError as exc:
            raise _usage_error(exc, where) from None
        except UsageError as exc:
            raise UsageError(f"{where}{exc}") from None
        return request, rendered, composed

    def _capture(self, cell: str) -> Any:
        from .render import render_outputs

        outputs, result = _kernel.run_captured(self.shell, cell)
        if not result.success:
            raise UsageError("The cell raised an error, so nothing was sent.")
        try:
            return render_outputs(outputs)
        except SmtpMagicError as exc:  # e.g. a chart that cannot become an image
            raise _usage_error(exc, "Nothing was sent: ") from None

    def _preview(self, requests: list[SendRequest], built: list[Any], warnings: list[str],
                 removed: list[str]) -> None:
        from .preview import preview_html, preview_notes, preview_notes_html, preview_text

        composed = built[0]
        note = f" (the first of {len(requests)} messages)" if len(requests) > 1 else ""
        display(Block(preview_html(composed) + (f"<div>{note.strip()}</div>" if note else "")
                      + preview_notes_html(removed, warnings),
                      "\n".join([f"Preview, nothing was sent{note}",
                                 *preview_notes(removed, warnings), preview_text(composed)])))

    # -- %smtp_outbox --
    @no_var_expand
    @magic_arguments()
    @argument("--wait", action="store_true",
              help="Block until no send is pending; fail if any failed.")
    @argument("--retry", action="store_true",
              help="Resend the pending and failed messages (of a partly sent one, only the "
              "refused recipients), each to the server it was going to.")
    @argument("--in-doubt", action="store_true",
              help="With --retry: also resend the messages in doubt (sent, but the server's "
              "final reply never came: they may have been delivered, and may arrive twice).")
    @argument("--clear", action="store_true",
              help="Forget the failed messages (on disk) and the finished sends of this session.")
    @argument("--limit", type=int, default=20, metavar="N",
              help="Show the newest N sends (default 20); the counts above the table are of all.")
    @line_magic
    def smtp_outbox(self, line: str = "") -> None:
        """This session's sends with their status (pending, sent, failed: reason, message id),
        plus messages from earlier sessions that were never delivered (kept on disk).

        Sends still in flight are waited for, up to a few seconds (``--wait``: until they are
        done), so that right after a send the table shows how it went."""
        args = self._parse(self.smtp_outbox, line)
        box = api.outbox(current())
        if args.clear:
            keys = [e.key for e in undelivered(box.entries(), history.records())]
            for key in keys:
                box.remove(key)
            pending = [r for r in history.records() if r.status == "pending"]
            history.clear()
            for record in pending:
                history.add(record)
            print(f"Cleared {len(keys)} undelivered message(s) and the finished sends.")
        if args.wait:
            try:
                stuck = _kernel.wait_all()
            except KeyboardInterrupt:
                raise _kernel.one_line(KeyboardInterrupt(
                    "stopped waiting; the sends go on (%smtp_outbox shows them).")) from None
            if stuck:
                print(f"{len(stuck)} send(s) run on this notebook's own event loop and cannot "
                      "finish while a cell waits: await them instead.")
        else:
            _settle_in_flight("%smtp_outbox --wait")
        if args.retry:
            entries = undelivered(box.entries(), history.records())
            doubtful = sum(1 for e in entries if e.status == "in doubt")
            if not entries or (doubtful == len(entries) and not args.in_doubt):
                print("Nothing to retry.")
            else:
                try:
                    api.retry_outbox(config=current(), keys=[e.key for e in entries],
                                     in_doubt=args.in_doubt)
                except SmtpMagicError as exc:
                    raise _kernel.one_line(exc) from None
            if doubtful and not args.in_doubt:
                print(f"{doubtful} message(s) in doubt were not resent: they may have been "
                      "delivered (%smtp_outbox --retry --in-doubt resends them).")
        limit = max(args.limit, 0)
        _live_display(lambda: outbox_table(history.records(), box.entries(), box.path, limit))
        if args.wait or args.retry:
            failed = latest_failures(history.records())
            if failed:
                raise _kernel.one_line(failure_error(failed))

    # -- %smtp_inbox --
    @no_var_expand
    @magic_arguments()
    @argument("--limit", type=int, default=20, metavar="N", help="Show the newest N (default 20).")
    @argument("--remote-images", action="store_true",
              help="Load the messages' remote images (blocked by default, as a mail client does: "
                   "loading them tells their sender the message was read).")
    @line_magic
    def smtp_inbox(self, line: str = "") -> None:
        """Messages received by the built-in capture server (``%smtp_config --local``), newest
        first. Sends of this session still in flight are waited for, up to a few seconds.
        Each message is shown inert: no script runs and nothing remote loads, except remote
        images with ``--remote-images``."""
        args = self._parse(self.smtp_inbox, line)
        from .server import count_messages, default_maildir, messages

        _settle_in_flight("%smtp_outbox --wait")
        limit = max(args.limit, 0)
        _live_display(lambda: Inbox(messages(limit=limit), str(default_maildir()),
                                    total=count_messages(), remote_images=args.remote_images))

    # -- %smtp_compose --
    @no_var_expand
    @magic_arguments()
    @prefill_arguments  # --to --cc --bcc --from --reply-to --attach (models.MESSAGE_OPTIONS)
    @argument("--subject", metavar="S")
    @argument("--content-type", choices=config.body_formats())
    @line_magic
    def smtp_compose(self, line: str = "") -> None:
        """Show the compose form (an ipywidgets Box) linked both ways to the settings, prefilled
        by the options."""
        args = self._parse(self.smtp_compose, line)
        prefill = {k: v for k, v in vars(args).items() if v is not None}
        if "attach" in prefill:  # the form's name for what --attach gives
            prefill["attachments"] = prefill.pop("attach")
        from .widgets import compose

        display(compose(namespace=self.user_ns, **prefill))


# -- showing the outbox and the inbox while sends are in flight ---------------------------------------

# How long %smtp_outbox and %smtp_inbox wait for sends still in flight before showing them: a
# notebook run with Run All shows what its sends did, not "pending".
SETTLE_SECONDS = 10.0
# While sends are still pending after that, their output is redrawn in place at most this often.
FOLLOW_SECONDS = 1.0


def _live_display(render: Callable[[], Any]) -> None:
    """Display ``render()``; while sends of this session are pending, redraw it in place (an
    IPython display update, ``display_id``) as they finish, so that it stays true: a paced merge
    longer than the wait shows "pending" at first, and what happened once it is over."""
    handle = display(render(), display_id=True)
    if handle is None or not history.pending():
        return
    relay = Relay()  # the redraws go out from the kernel's loop, parented to this cell

    def follow() -> None:
        shown = len(history.pending())
        while shown:
            left = len(history.wait(FOLLOW_SECONDS))
            if left != shown:
                relay.post(partial(handle.update, render()))
                shown = left

    threading.Thread(target=follow, name="smtp-magic-live-output", daemon=True).start()


def _settle_in_flight(how: str) -> None:
    """Wait (at most SETTLE_SECONDS; an interrupt stops it) for this session's sends in flight."""
    if not history.pending():
        return
    try:
        stuck = _kernel.wait_all(SETTLE_SECONDS)
    except KeyboardInterrupt:
        stuck = history.pending()
    if stuck:
        print(f"{len(stuck)} send(s) still in flight; {how} waits until they are done.")


# -- loading -----------------------------------------------------------------------------------------

# The shells whose IPython config the current settings already took in (reloading must not
# re-apply c.SmtpMagic.* and the environment over what %smtp_config set since).
_configured: weakref.WeakKeyDictionary[Any, SmtpMagic] = weakref.WeakKeyDictionary()


def load_ipython_extension(shell: Any) -> None:
    """Register ``SmtpMagic`` in ``shell.configurables`` and the magics; loading twice is harmless."""
    settings = config._current
    if settings is None:
        # Built from the shell's config first, so c.SmtpMagic.* sits below the environment.
        settings = config.set_current(SmtpMagic.from_ipython_config(shell.config).load_env())
    elif _configured.get(shell) is not settings:
        settings.load_ipython_config(shell.config)
        settings.load_env()
    _configured[shell] = settings
    shell.configurables[:] = [c for c in shell.configurables if not isinstance(c, SmtpMagic)]
    shell.configurables.append(settings)
    # Displaying the settings shows the table %smtp_config shows (the settings hold no views).
    formatter = _html_formatter(shell)
    if formatter is not None:
        formatter.for_type(SmtpMagic, _settings_html)
    if "SmtpMagics" not in shell.magics_manager.registry:
        shell.register_magics(SmtpMagics)


def _settings_html(settings: SmtpMagic) -> str:
    return settings_table(settings)._repr_html_()


def _html_formatter(shell: Any) -> Any:
    """The shell's text/html formatter (None for a shell without IPython's formatters)."""
    formatters = getattr(getattr(shell, "display_formatter", None), "formatters", None) or {}
    return formatters.get("text/html")


def unload_ipython_extension(shell: Any) -> None:
    """Remove the magics and the settings from ``%config`` (the settings object itself stays)."""
    manager = shell.magics_manager
    instance = manager.registry.pop("SmtpMagics", None)
    for table in manager.magics.values():
        for name, func in list(table.items()):
            if instance is not None and getattr(func, "__self__", None) is instance:
                del table[name]
    shell.configurables[:] = [c for c in shell.configurables if not isinstance(c, SmtpMagic)]
    formatter = _html_formatter(shell)
    if formatter is not None:
        formatter.type_printers.pop(SmtpMagic, None)

