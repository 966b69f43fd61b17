"""``smtp-magic``: send a seed-format request, run the capture server, inspect the outbox."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from ._views import visible
from .errors import ExitCode, InvalidRequest, SmtpMagicError
from .models import Response

log = logging.getLogger(__name__)


def _read_json(path: str, what: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(f"The {what} file {path!r} cannot be read: {exc.strerror}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The {what} file {path!r} is not valid JSON (line {exc.lineno}: {exc.msg})."
        ) from None


def _print(response: Response) -> int:
    print(response.to_json(indent=2))
    return response.exitcode


def _settings(args: argparse.Namespace) -> Any:
    """The settings of a command: the current ones, ``--profile``, ``--config``, ``--debug``."""
    from .api import load_settings

    settings = load_settings(None).copy()
    if getattr(args, "profile", None):
        settings.update({"profile": args.profile}, source="--profile")
    if args.config:
        settings.load_file(args.config)
    if getattr(args, "debug", False):
        settings.update({"debug": True}, source="--debug")
    return settings


def cmd_send(args: argparse.Namespace) -> int:
    from .api import request_from_dict, send_many

    try:
        settings = _settings(args)
        request = _read_json(args.request, "request")
        request_from_dict(request)  # validate before anything else, for a precise message
    except SmtpMagicError as exc:
        return _print(Response.from_error(exc))
    (response,) = send_many([request], config=settings, timeout=args.timeout)
    return _print(response)


def cmd_send_notebook(args: argparse.Namespace) -> int:
    from .api import send_notebook

    try:
        settings = _settings(args)
    except SmtpMagicError as exc:
        return _print(Response.from_error(exc))
    response = send_notebook(
        args.notebook, args.to, subject=args.subject, cc=args.cc, bcc=args.bcc,
        sender=args.sender, no_input=args.no_input, attach_notebook=args.attach_notebook,
        attachments=args.attach or (), config=settings, timeout=args.timeout)
    return _print(response)


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    users = {}
    for item in args.user or ():
        name, sep, password = item.partition(":")
        if not sep:
            raise InvalidRequest(f"--user {item!r} must look like NAME:PASSWORD.")
        users[name] = password
    serve(host=args.host, port=args.port, maildir=args.maildir, tls=args.tls,
          certfile=args.cert, keyfile=args.key, users=users or None)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .api import check, oauth2_login, oauth2_logout

    try:
        settings = _settings(args)
        if args.oauth2_logout:
            found = oauth2_logout(settings)
            print("Signed out: the saved OAuth2 sign-in was removed." if found
                  else "There was no saved OAuth2 sign-in.")
            return 0
        if args.oauth2_login:
            print(oauth2_login(settings).describe(), flush=True)
        report = check(settings)
    except SmtpMagicError as exc:
        return _print(Response.from_error(exc))
    print(visible("\n".join(report.lines())))  # the greeting is the server's text
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    from .api import outbox, retry_outbox

    settings = _settings(args)
    box = outbox(settings)
    if args.clear:
        print(f"Removed {box.clear()} message(s) from {box.path}.")
        return 0
    if args.retry:
        responses = retry_outbox(config=settings)
        print(json.dumps([r.to_dict() for r in responses], indent=2))
        return max((r.exitcode for r in responses), default=0)
    entries = box.entries()
    for e in entries:
        reason = f" [{e.exitcode}] {e.reason}" if e.status == "failed" else ""
        print(f"{e.status:8} {e.subject!r} to {', '.join(e.recipients)}{reason}")
    print(f"{len(entries)} message(s) in {box.path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(args)


_EXIT_CODES = ", ".join(f"{int(code)} {code.meaning}" for code in ExitCode)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which would read as "could not connect" (SPEC §8)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise _UsageError(message)


def _connection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=None, metavar="NAME",
                   help="use a saved profile (profiles.json in the user's config folder)")
    p.add_argument("--debug", action="store_true",
                   help="show the SMTP conversation on standard error (logins redacted)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="smtp-magic",
        description="Send email with the SMTP connector, or run the built-in capture server.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("send", help="send one request (the connector's JSON formats)",
                       description="Send one message. Prints the response as JSON and exits with "
                       f"its exit code ({_EXIT_CODES}).")
    p.add_argument("--config", required=True, metavar="CONN.json",
                   help="connection settings: target, port, username, password, attachment_size")
    p.add_argument("--request", required=True, metavar="REQ.json",
                   help="the request: to, from, subject, body, cc, bcc, attachments, content-type "
                   "('-' reads standard input)")
    p.add_argument("--timeout", type=float, default=None, help="execution timeout in seconds")
    _connection_options(p)
    p.set_defaults(func=cmd_send)

    p = sub.add_parser(
        "send-notebook", help="email an executed notebook (outputs, and code unless --no-input)",
        description="Email an executed notebook as one message: its Markdown, code and outputs "
        "in order, images inline, long tables and outputs cut to fit an email and attached in "
        "full. Prints the response as JSON and exits with its exit code. In a papermill "
        "pipeline: papermill report.ipynb out.ipynb -p week 12 && smtp-magic send-notebook "
        "out.ipynb --to team@example.org --no-input")
    p.add_argument("notebook", metavar="NOTEBOOK", help="the executed .ipynb")
    p.add_argument("--to", nargs="+", required=True, metavar="ADDR", help="recipients")
    p.add_argument("--cc", nargs="+", metavar="ADDR")
    p.add_argument("--bcc", nargs="+", metavar="ADDR")
    p.add_argument("--subject", default=None,
                   help="the subject (default: the notebook's first heading, or its name)")
    p.add_argument("--from", dest="sender", default=None, metavar="ADDR")
    p.add_argument("--no-input", action="store_true", help="leave the code out: outputs only")
    p.add_argument("--attach-notebook", action="store_true", help="attach the .ipynb itself")
    p.add_argument("--attach", nargs="+", metavar="FILE", help="more files to attach (globs allowed)")
    p.add_argument("--config", default=None, metavar="CONN.json", help="connection settings")
    p.add_argument("--timeout", type=float, default=None, help="execution timeout in seconds")
    _connection_options(p)
    p.set_defaults(func=cmd_send_notebook)

    p = sub.add_parser("serve", help="run the built-in capture server",
                       description="Accept mail on 127.0.0.1 and store each message as an .eml "
                       "file in a Maildir, until interrupted.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8025, help="0 picks a free port (default 8025)")
    p.add_argument("--maildir", default=None, help="where to store messages")
    p.add_argument("--tls", choices=["starttls", "tls"], default=None,
                   help="offer STARTTLS, or use implicit TLS (needs --cert and --key)")
    p.add_argument("--cert", default=None, help="PEM certificate for --tls")
    p.add_argument("--key", default=None, help="PEM private key for --tls")
    p.add_argument("--user", action="append", metavar="NAME:PASSWORD",
                   help="accept AUTH for this user (repeatable)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check", help="connect, negotiate TLS and log in; send nothing")
    p.add_argument("--config", default=None, metavar="CONN.json")
    p.add_argument("--oauth2-login", action="store_true",
                   help="sign in with OAuth2 first (shows a URL and a code to enter there)")
    p.add_argument("--oauth2-logout", action="store_true",
                   help="forget the saved OAuth2 sign-in, then stop")
    _connection_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("outbox", help="list, retry or clear undelivered messages")
    p.add_argument("--config", default=None, metavar="CONN.json")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--retry", action="store_true", help="resend every kept message")
    group.add_argument("--clear", action="store_true", help="forget every kept message")
    _connection_options(p)
    p.set_defaults(func=cmd_outbox)

    p = sub.add_parser("demo", help="run the quickstart notebook against the capture server")
    p.add_argument("--notebook", default=None, help="notebook to run (default: the quickstart)")
    p.add_argument("--output", default=None, help="where to write the executed notebook")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        return _print(Response(exitcode=ExitCode.INVALID, message=f"Invalid command line: {exc}."))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except SmtpMagicError as exc:
        return _print(Response.from_error(exc))
    except Exception as exc:  # noqa: BLE001 - the CLI answers in JSON, never with a traceback
        return _print(Response(exitcode=ExitCode.INVALID, message=f"Internal error: {type(exc).__name__}: {exc}."))


if __name__ == "__main__":
    sys.exit(main())
