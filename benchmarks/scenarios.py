"""One benchmark measurement in a fresh process; ``run.py`` starts this and reads its JSON line.

    python benchmarks/scenarios.py bulk PEER PORT
    python benchmarks/scenarios.py stream COUNT PORT
    python benchmarks/scenarios.py million COUNT PORT
    python benchmarks/scenarios.py attachment PEER PORT FILE
    python benchmarks/scenarios.py load_ext EXTENSION
    python benchmarks/scenarios.py kernel PORT
    python benchmarks/scenarios.py stall_server PORT SECONDS LIFETIME
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

N_BULK = 500
SENDER = "reports@example.org"


def _status(field: str) -> int:
    """VmRSS / VmHWM of this process in bytes (ru_maxrss would include the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def messages() -> list[tuple[str, str, str, str]]:
    """500 distinct ~2 KB messages: (to, subject, text, html), the same for every peer."""
    out = []
    for i in range(N_BULK):
        rows = "".join(f"<tr><td>item {j}</td><td>{(i + 1) * j}</td></tr>" for j in range(20))
        html = (f"<html><body><p>Hello user {i},</p><p>Your numbers for week {i % 52}:</p>"
                f"<table>{rows}</table><p>Regards,<br>the reports robot</p></body></html>")
        text = (f"Hello user {i},\n\nYour numbers for week {i % 52}:\n\n"
                + "".join(f"item {j}  {(i + 1) * j}\n" for j in range(20)) * 2
                + "\nRegards,\nthe reports robot\n")
        out.append((f"user{i}@example.org", f"Weekly report {i}", text, html))
    return out


# -- bulk: 500 distinct text+HTML messages over reused connections ------------------------------

def bulk(peer: str, port: int) -> dict[str, Any]:
    msgs = messages()
    config = {"host": "127.0.0.1", "port": port, "security": "none", "sender": SENDER}
    run: Callable[[], Any]
    if peer == "smtplib":
        import smtplib
        from email.message import EmailMessage

        def run() -> None:
            with smtplib.SMTP("127.0.0.1", port) as smtp:
                for to, subject, text, html in msgs:
                    m = EmailMessage()
                    m["From"], m["To"], m["Subject"] = SENDER, to, subject
                    m.set_content(text)
                    m.add_alternative(html, subtype="html")
                    smtp.send_message(m)
    elif peer == "aiosmtplib":
        import asyncio
        from email.message import EmailMessage

        import aiosmtplib

        async def main() -> None:
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
            await smtp.connect()
            for to, subject, text, html in msgs:
                m = EmailMessage()
                m["From"], m["To"], m["Subject"] = SENDER, to, subject
                m.set_content(text)
                m.add_alternative(html, subtype="html")
                await smtp.send_message(m)
            await smtp.quit()

        def run() -> None:
            asyncio.run(main())
    elif peer == "yagmail":
        import yagmail

        def run() -> None:
            yag = yagmail.SMTP(SENDER, host="127.0.0.1", port=port, smtp_ssl=False,
                               smtp_starttls=False, smtp_skip_login=True)
            for to, subject, text, html in msgs:
                yag.send(to=to, subject=subject, contents=[text, html], prettify_html=False)
            yag.close()
    elif peer == "redmail":
        from redmail import EmailSender

        def run() -> None:
            sender = EmailSender(host="127.0.0.1", port=port, use_starttls=False)
            with sender:  # one connection for the whole loop
                for to, subject, text, html in msgs:
                    sender.send(subject=subject, sender=SENDER, receivers=[to], text=text, html=html)
    elif peer == "raw_pipelined":
        # The speed limit: no composing at all. The messages are built before the timing
        # starts (with the email package), then written over one connection by a minimal
        # asyncio client that pipelines each MAIL/RCPT/DATA with the end of the previous
        # message (RFC 2920) and waits only where SMTP makes it wait (for the 354).
        import asyncio
        from email.message import EmailMessage

        built = []
        for to, subject, text, html in msgs:
            m = EmailMessage()
            m["From"], m["To"], m["Subject"] = SENDER, to, subject
            m.set_content(text)
            m.add_alternative(html, subtype="html")
            data = m.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            data = b"\r\n".join(b"." + line if line.startswith(b".") else line
                                 for line in data.split(b"\r\n"))
            built.append((to, data if data.endswith(b"\r\n") else data + b"\r\n"))

        async def replies(reader: asyncio.StreamReader, count: int) -> None:
            for _ in range(count):
                while True:
                    line = await reader.readline()
                    if not line or line[0:1] in (b"4", b"5"):
                        raise RuntimeError(f"server said {line!r}")
                    if line[3:4] != b"-":
                        break

        async def main() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await replies(reader, 1)
            writer.write(b"EHLO bench.example.org\r\n")
            await replies(reader, 1)
            pending = b""  # the end of the previous message, sent with the next envelope
            for to, data in built:
                writer.write(pending + f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<{to}>\r\nDATA\r\n"
                             .encode("ascii"))
                await replies(reader, 4 if pending else 3)  # (250 for the last,) 250, 250, 354
                writer.write(data)
                pending = b".\r\n"
            writer.write(pending + b"QUIT\r\n")
            await replies(reader, 2)
            writer.close()
            await writer.wait_closed()

        def run() -> None:
            asyncio.run(main())
    elif peer.startswith("smtp_magic"):
        # smtp_magic: text part given; _autotext: generated from the HTML; _public: the text
        # given, every shortcut off (EmailMessage + aiosmtplib's sendmail, see _shortcuts.py);
        # _dkim_ed25519 / _dkim_rsa: as smtp_magic, every message DKIM-signed;
        # _defaults: what a user of the connector's JSON format sends -- request dicts with only the
        # HTML body, and a config that leaves security (auto) and every other setting alone.
        if peer == "smtp_magic_public":
            os.environ["SMTP_MAGIC_NO_SHORTCUTS"] = "1"
        elif peer.startswith("smtp_magic_dkim_"):
            config.update(_dkim_settings(peer.rsplit("_", 1)[1]))
            import dkim  # noqa: F401 - imported before timing, as the peers' modules are
            import nacl.signing  # noqa: F401
        elif peer not in ("smtp_magic", "smtp_magic_autotext", "smtp_magic_defaults"):
            raise SystemExit(f"unknown peer {peer}")
        # Imported before timing, as the peers' modules are.
        import aiosmtplib

        import smtp_magic
        import smtp_magic.htmltext
        import smtp_magic.mime
        import smtp_magic.stages
        import smtp_magic.transport
        from smtp_magic.models import SendRequest

        given = peer not in ("smtp_magic_autotext", "smtp_magic_defaults")
        requests: list[Any] = [
            SendRequest(to=to, subject=subject, body=html, text=text if given else None)
            for to, subject, text, html in msgs]
        settings: dict[str, Any] = config
        if peer == "smtp_magic_defaults":
            requests = [{"action": "send", "to": to, "subject": subject, "body": html,
                         "content-type": "text/html"} for to, subject, _, html in msgs]
            settings = {"target": "127.0.0.1", "port": port, "from": SENDER}

        def run() -> None:
            responses = smtp_magic.send_many(requests, config=settings)
            bad = [r for r in responses if not r.ok]
            if bad:
                raise RuntimeError(f"{len(bad)} sends failed: {bad[0].message}")
    else:
        raise SystemExit(f"unknown peer {peer}")
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rate": N_BULK / seconds}


def _dkim_settings(algorithm: str) -> dict[str, str]:
    """DKIM settings with a fresh key (made before the timing starts)."""
    import subprocess
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="smtp-magic-bench-dkim-")) / "key.pem"
    args = (["-algorithm", "ED25519"] if algorithm == "ed25519"
            else ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
    subprocess.run(["openssl", "genpkey", *args, "-out", str(path)], check=True,
                   capture_output=True)
    return {"dkim_domain": SENDER.split("@")[1], "dkim_selector": "bench", "dkim_key": str(path)}


# -- 100,000 rows through send_many, the requests from a generator: peak memory ------------------

def stream(count: int, port: int) -> dict[str, Any]:
    """``send_many`` of ``count`` distinct messages produced by a generator, as a mail merge
    over a large table would; reports the peak RSS of the whole process (VmHWM)."""
    import smtp_magic
    from smtp_magic.models import SendRequest

    config = {"host": "127.0.0.1", "port": port, "security": "none", "sender": SENDER}

    def rows() -> Any:
        for i in range(count):
            html = (f"<p>Hello customer {i},</p><p>your balance is <b>{i * 7 % 1000}.{i % 100:02d}"
                    f"</b> EUR.</p><p>Regards,<br>Accounts</p>")
            text = (f"Hello customer {i},\n\nyour balance is {i * 7 % 1000}.{i % 100:02d} EUR."
                    "\n\nRegards,\nAccounts\n")
            yield SendRequest(to=f"customer{i}@example.org", subject=f"Your balance, #{i}",
                              body=html, text=text)

    before = _status("VmRSS")
    started = time.perf_counter()
    responses = smtp_magic.send_many(rows(), config=config)
    seconds = time.perf_counter() - started
    bad = [r for r in responses if not r.ok]
    if len(responses) != count or bad:
        raise RuntimeError(f"{len(responses)} responses, {len(bad)} failed: "
                           f"{bad[0].message if bad else ''}")
    return {"seconds": seconds, "rate": count / seconds, "peak_bytes": _status("VmHWM"),
            "before_bytes": before, "count": count}


# -- 1,000,000 rows through Mailer.iter_send_many: everything delivered, constant memory ----------

def million(count: int, port: int) -> dict[str, Any]:
    """``Mailer.iter_send_many`` over ``count`` distinct messages from a generator, each
    Response looked at and dropped as it comes; reports the peak RSS of the whole process."""
    import smtp_magic
    from smtp_magic.models import SendRequest

    config = {"host": "127.0.0.1", "port": port, "security": "none", "sender": SENDER}

    def rows() -> Any:
        for i in range(count):
            yield SendRequest(to=f"customer{i}@example.org", subject=f"Your balance, #{i}",
                              body=f"<p>Hello customer {i},</p><p>your balance is "
                                   f"<b>{i * 7 % 1000}.{i % 100:02d}</b> EUR.</p>",
                              text=f"Hello customer {i},\n\nyour balance is "
                                   f"{i * 7 % 1000}.{i % 100:02d} EUR.\n")

    before = _status("VmRSS")
    started = time.perf_counter()
    sent = failed = 0
    first_failure = ""
    with smtp_magic.Mailer(config) as mailer:
        for response in mailer.iter_send_many(rows()):
            if response.ok:
                sent += 1
            else:
                failed += 1
                first_failure = first_failure or response.message
    seconds = time.perf_counter() - started
    if sent != count:
        raise RuntimeError(f"{sent} of {count} sent, {failed} failed: {first_failure}")
    return {"seconds": seconds, "rate": count / seconds, "peak_bytes": _status("VmHWM"),
            "before_bytes": before, "count": count}


# -- one large attachment: wall time and extra peak memory -------------------------------------

def _big_message(file: str) -> Any:
    """The message the smtplib and aiosmtplib peers send: the file as one attachment, the
    usual way with the email package."""
    from email.message import EmailMessage

    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = SENDER, "bob@example.org", "Big file"
    m.set_content("See attached.")
    with open(file, "rb") as f:
        m.add_attachment(f.read(), maintype="application", subtype="octet-stream",
                         filename=os.path.basename(file))
    return m


def attachment(peer: str, port: int, path: str) -> dict[str, Any]:
    size = os.path.getsize(path)
    name = os.path.basename(path)
    send: Callable[[str], Any]
    if peer == "smtplib":
        import smtplib

        def send(file: str) -> None:
            with smtplib.SMTP("127.0.0.1", port) as smtp:
                smtp.send_message(_big_message(file))
    elif peer == "aiosmtplib":
        import asyncio

        import aiosmtplib

        def send(file: str) -> None:
            asyncio.run(aiosmtplib.send(_big_message(file), hostname="127.0.0.1", port=port,
                                        start_tls=False))
    elif peer == "yagmail":
        import yagmail

        def send(file: str) -> None:
            yag = yagmail.SMTP(SENDER, host="127.0.0.1", port=port, smtp_ssl=False,
                               smtp_starttls=False, smtp_skip_login=True)
            yag.send(to="bob@example.org", subject="Big file", contents="See attached.",
                     attachments=[file])
            yag.close()
    elif peer == "redmail":
        from redmail import EmailSender

        def send(file: str) -> None:
            sender = EmailSender(host="127.0.0.1", port=port, use_starttls=False)
            sender.send(subject="Big file", sender=SENDER, receivers=["bob@example.org"],
                        text="See attached.", attachments={os.path.basename(file): Path(file)})
    elif peer == "smtp_magic":
        import smtp_magic

        config = {"host": "127.0.0.1", "port": port, "security": "none", "sender": SENDER}

        def send(file: str) -> None:
            r = smtp_magic.send("bob@example.org", "Big file", "See attached.",
                                content_type="text/plain", attachments=[file], config=config)
            if not r.ok:
                raise RuntimeError(r.message)
    else:
        raise SystemExit(f"unknown peer {peer}")
    # Warm up with a small file so lazy imports are not counted as the attachment's memory.
    small = Path(path).with_name("warmup.bin")
    small.write_bytes(b"x" * 1000)
    send(str(small))
    before = _status("VmRSS")
    started = time.perf_counter()
    send(path)
    seconds = time.perf_counter() - started
    extra = _status("VmHWM") - before
    return {"seconds": seconds, "extra_bytes": extra, "size": size, "ratio": extra / size,
            "name": name}


# -- %load_ext in a fresh shell ------------------------------------------------------------------

HEAVY = ("pandas", "matplotlib", "ipywidgets", "aiosmtplib")


def load_ext(extension: str) -> dict[str, Any]:
    from IPython.terminal.interactiveshell import TerminalInteractiveShell

    shell = TerminalInteractiveShell.instance()
    started = time.perf_counter()
    shell.run_line_magic("load_ext", extension)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "heavy": [m for m in HEAVY if m in sys.modules]}


# -- an asynchronous %%smtp_send in an interactive kernel ----------------------------------------

def kernel(port: int) -> dict[str, Any]:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=60)
    try:
        def run(code: str, timeout: float = 30) -> tuple[float, dict[str, Any]]:
            started = time.perf_counter()
            msg_id = kc.execute(code, allow_stdin=True, store_history=True)
            while True:
                reply = kc.get_shell_msg(timeout=timeout)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return time.perf_counter() - started, reply["content"]

        setup = (f"%load_ext smtp_magic\n%smtp_config --host 127.0.0.1 --port {port} "
                 f"--security none --from {SENDER}")
        _, content = run(setup)
        if content["status"] != "ok":
            return {"error": f"{content.get('ename')}: {content.get('evalue')}"}
        send = "%%smtp_send --to bob@example.org --subject 'Async check'\n<p>Hello</p>"
        run("pass")
        run(send)  # warm-up: the first send imports the composer
        time.sleep(2.5)
        empty, sends, errors = [], [], []
        for _ in range(7):
            empty.append(run("pass")[0])
            seconds, content = run(send)
            sends.append(seconds)
            if content["status"] != "ok":
                errors.append(f"{content.get('ename')}: {content.get('evalue')}")
        return {"empty": statistics.median(empty), "send": statistics.median(sends),
                "errors": errors[:1]}
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


# -- a server that takes its time (aiosmtpd) ------------------------------------------------------

def stall_server(port: int, stall: float, lifetime: float) -> None:
    import asyncio

    from aiosmtpd.controller import Controller

    class Slow:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            await asyncio.sleep(stall)
            return "250 OK"

    controller = Controller(Slow(), hostname="127.0.0.1", port=port)
    controller.start()
    print(json.dumps({"ready": True}), flush=True)
    try:
        time.sleep(lifetime)  # stops by itself
    finally:
        controller.stop()


def main(argv: list[str]) -> None:
    kind, args = argv[0], argv[1:]
    if kind == "stall_server":
        stall_server(int(args[0]), float(args[1]), float(args[2]))
        return
    if kind == "bulk":
        result = bulk(args[0], int(args[1]))
    elif kind == "stream":
        result = stream(int(args[0]), int(args[1]))
    elif kind == "million":
        result = million(int(args[0]), int(args[1]))
    elif kind == "attachment":
        result = attachment(args[0], int(args[1]), args[2])
    elif kind == "load_ext":
        result = load_ext(args[0])
    elif kind == "kernel":
        result = kernel(int(args[0]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
