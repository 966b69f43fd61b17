"""``smtp-magic``: send a JSON request (request.json), run the capture server, inspect the outbox."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .errors import ExitCode, InvalidRequest, SmtpMagicError
from .models import MESSAGE_OPTIONS, Response

log = logging.getLogger(__name__)


def _read_json(path: str, what: str) -> Any:
    """A request file's JSON; non-UTF-8, too deep or not JSON is one sentence (exit 1)."""
    from ._paths import read_json

    data = sys.stdin.buffer.read() if path == "-" else None
    return read_json(path, f"The {what} file", trusted=False, data=data)


def _say(text: str) -> None:
    """Print a line; a reader that went away (``smtp-magic ... | head -1``) ends the output
    quietly, and the command still ends with its own exit code."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _stdout_gone()


def _stdout_gone() -> None:
    """Standard output's reader has gone: later writes (and the flush at exit) go nowhere
    instead of raising again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _print(response: Response) -> int:
    _say(response.to_json(indent=2))
    return response.exitcode


def _print_json(value: Any) -> None:
    _say(json.dumps(value, indent=2))


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
        if not (args.config or args.profile):
            raise InvalidRequest("send needs the connection settings: --config CONN.json or "
                                 "--profile NAME.")
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
        attachments=args.attach or (), config=settings, timeout=args.timeout,
        reply_to=args.reply_to)
    return _print(response)


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    users = {}
    for item in args.user or ():
        name, sep, password = item.partition(":")
        if not sep:
            raise InvalidRequest(f"--user {item!r} must look like NAME:PASSWORD.")
        users[name] = password
    if args.require_auth and not users:
        raise InvalidRequest("--require-auth needs at least one --user NAME:PASSWORD to log in with.")
    serve(host=args.host, port=args.port, maildir=args.maildir, tls=args.tls,
          certfile=args.cert, keyfile=args.key, users=users or None,
          require_auth=bool(users))  # --user implies --require-auth
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .api import check, check_deliverability, oauth2_login, oauth2_logout

    try:
        settings = _settings(args)
        if args.oauth2_logout:
            found = oauth2_logout(settings)
            _print_json({"exitcode": 0, "message": "Signed out: the saved OAuth2 sign-in was "
                         "removed." if found else "There was no saved OAuth2 sign-in."})
            return 0
        signed_in = None
        if args.oauth2_login:
            # The code to enter is for the person at the terminal; standard output stays JSON.
            signed_in = oauth2_login(settings, show=lambda code: print(
                code.text(), file=sys.stderr, flush=True)).describe()
        if args.deliverability:
            return _print_deliverability(check_deliverability(settings))
        report = check(settings)
    except SmtpMagicError as exc:
        return _print(Response.from_error(exc))
    lines = report.lines()
    login = next((line.removeprefix("Login: ") for line in lines if line.startswith("Login: ")), "")
    _print_json({"exitcode": 0, "message": "", "result": "connected",
                 **({"oauth2_login": signed_in} if signed_in else {}),
                 "host": report.host, "port": report.port, "greeting": report.greeting,
                 "tls": report.tls, "tls_version": report.tls_version, "login": login,
                 "extensions": report.extensions, "report": lines})
    return 0


def _print_deliverability(report: Any) -> int:
    """The sender check as JSON, like every other outcome of ``check``."""
    _print_json({"exitcode": 0, "message": "", "result": "checked", "domain": report.domain,
                 "ok": report.ok,
                 "findings": [{"topic": f.topic, "ok": f.ok, "text": f.text}
                              for f in report.findings],
                 "report": report.lines()})
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    from .api import outbox, retry_outbox

    settings = _settings(args)
    box = outbox(settings)
    if args.clear:
        _say(f"Removed {box.clear()} message(s) from {box.path}.")
        return 0
    if args.in_doubt and not args.retry:
        return _print(Response.from_error(InvalidRequest(
            "--in-doubt goes with --retry (smtp-magic outbox --retry --in-doubt).")))
    if args.retry:
        responses = retry_outbox(config=settings, in_doubt=args.in_doubt)
        _print_json([r.to_dict() for r in responses])
        doubtful = sum(1 for e in box.entries() if e.status == "in doubt")
        if doubtful and not args.in_doubt:
            print(f"{doubtful} message(s) in doubt were not resent: they may have been "
                  "delivered (smtp-magic outbox --retry --in-doubt resends them).", file=sys.stderr)
        return max((r.exitcode for r in responses), default=0)
    entries = box.entries()
    for e in entries:
        reason = f" [{e.exitcode}] {e.reason}" if e.reason else ""
        where = e.destination or {}
        to = f" via {where['host']}:{where['port']}" if where.get("host") else ""
        if where.get("transport") == "graph":
            to = " via Microsoft Graph"
        _say(f"{e.status:11} {e.subject!r} to {', '.join(e.recipients)}{to}{reason}")
    _say(f"{len(entries)} message(s) in {box.path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(args)


_EXIT_CODES = ", ".join(f"{int(code)} {code.meaning}" for code in ExitCode)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a usage error, which would read as "could not connect" (ExitCode.CONNECT)."""

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
    # The package's own __version__ (its parent is always imported first); importing it by
    # name would make the layering checker see the faces the package exports.
    version = getattr(sys.modules[__package__ or "smtp_magic"], "__version__", "unknown")
    parser.add_argument("--version", action="version", version=f"smtp-magic {version}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("send", help="send one request (the connector's JSON formats)",
                       description="Send one message. Prints the response as JSON and exits with "
                       f"its exit code ({_EXIT_CODES}).")
    p.add_argument("--config", default=None, metavar="CONN.json",
                   help="connection settings: target, port, username, password, attachment_size "
                   "(or --profile NAME, or both: the file's values win)")
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
    # --to --cc --bcc --from --attach: the table %%smtp_send uses (repeating one adds to it).
    for option in MESSAGE_OPTIONS:
        kwargs = option.argparse_kwargs()
        if option.flag == "--attach":
            kwargs.update(metavar="FILE", help="more files to attach (globs allowed)")
        p.add_argument(option.flag, required=option.flag == "--to", **kwargs)
    p.add_argument("--subject", default=None,
                   help="the subject (default: the notebook's first heading, or its name)")
    p.add_argument("--no-input", action="store_true", help="leave the code out: outputs only")
    p.add_argument("--attach-notebook", action="store_true", help="attach the .ipynb itself")
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
                   help="accept AUTH for this user (repeatable); implies --require-auth")
    p.add_argument("--require-auth", action="store_true",
                   help="refuse mail from clients that did not log in (530 5.7.0 Authentication "
                   "required); on whenever --user is given")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("check", help="connect, negotiate TLS and log in; send nothing")
    p.add_argument("--config", default=None, metavar="CONN.json")
    p.add_argument("--oauth2-login", action="store_true",
                   help="sign in with OAuth2 first (shows a URL and a code to enter there)")
    p.add_argument("--oauth2-logout", action="store_true",
                   help="forget the saved OAuth2 sign-in, then stop")
    p.add_argument("--deliverability", action="store_true",
                   help="instead of connecting: look up the sender domain's SPF, DKIM key and "
                        "DMARC policy in DNS ($SMTP_MAGIC_RESOLVER to ask another DNS server) "
                        "and say what receiving providers will conclude")
    _connection_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("outbox", help="list, retry or clear undelivered messages")
    p.add_argument("--config", default=None, metavar="CONN.json")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--retry", action="store_true",
                       help="resend the pending and failed messages (a partly sent one to its "
                       "refused recipients only), each to the server it was going to")
    p.add_argument("--in-doubt", action="store_true",
                   help="with --retry: also resend the messages in doubt (sent, but the final "
                   "reply never came: they may have been delivered and may arrive twice)")
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
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # nothing asked: say what can be asked (exit 0, like --help)
        try:
            parser.print_help()
        except BrokenPipeError:
            _stdout_gone()
        return 0
    try:
        args = parser.parse_args(argv)
    except BrokenPipeError:  # --help or --version into a closed pipe
        _stdout_gone()
        return 0
    except SystemExit as exc:  # --help and --version end argparse's way; main returns instead
        return exc.code if isinstance(exc.code, int) else 0
    except _UsageError as exc:
        return _print(Response(exitcode=ExitCode.INVALID, message=f"Invalid command line: {exc}."))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output of a subcommand that prints on its own (demo, serve)
        _stdout_gone()
        return 0
    except SmtpMagicError as exc:
        return _print(Response.from_error(exc))
    except Exception as exc:  # noqa: BLE001 - the CLI answers in JSON, never with a traceback
        return _print(Response(exitcode=ExitCode.INVALID, message=f"Internal error: {type(exc).__name__}: {exc}."))


if __name__ == "__main__":
    sys.exit(main())
