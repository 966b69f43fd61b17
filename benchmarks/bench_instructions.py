"""Benchmark: the instructions (valgrind's Ir) the bulk benchmark's request-dict send takes.

    python benchmarks/bench_instructions.py [RUNS]

Row 1a of ``run.py`` -- 500 HTML-only messages given as request dicts, default settings, one
``send_many`` to Postfix's smtp-sink -- run under ``valgrind --tool=callgrind`` in a fresh
process, minus the same process that sends nothing (the modules the scenario imports before its
timing, the messages made): what the timed send itself costs, in millions of instructions, and what delivering them takes on a warm connection
(the messages prepared, then ``Prepared.deliver``). Unlike times, instruction counts hardly move
with the machine's load (within about 1% from run to run: the number of event-loop turns follows
the server's timing), so they tell small changes apart; they leave out the kernel's work
(socket writes, fsync). Needs valgrind and smtp-sink; about a minute per run.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout

from benchmarks.run import servers

# What a child process does: "none" (only what every mode does first), "send" (row 1a's
# send_many), "prepared" (the messages prepared with a warm connection, not sent), "deliver"
# (the same, then delivered: their outbox marks and settling included).
MODES = ("none", "send", "prepared", "deliver")


def work(mode: str, port: int) -> None:
    # What run.py's bulk scenario imports before its timing starts, in every mode.
    import aiosmtplib  # noqa: F401

    import smtp_magic
    import smtp_magic.htmltext
    import smtp_magic.mime
    import smtp_magic.stages
    import smtp_magic.transport
    from benchmarks.scenarios import SENDER, messages
    from smtp_magic.engine import Mailer

    requests = [{"action": "send", "to": to, "subject": subject, "body": html,
                 "content-type": "text/html"} for to, subject, _, html in messages()]
    settings = {"target": "127.0.0.1", "port": port, "from": SENDER}
    if mode == "send":
        responses = smtp_magic.send_many(requests, config=settings)
        assert all(r.ok for r in responses), responses[0]
    elif mode in ("prepared", "deliver"):
        async def main() -> None:
            async with Mailer(settings) as mailer:
                await mailer.send_many_async(requests[:3])  # a warm connection
                prepared = mailer.prepare(requests)  # (left in the outbox, a temporary one)
                if mode == "deliver":
                    assert all(r.ok for r in await prepared.deliver())

        asyncio.run(main())


def instructions(mode: str, port: int, env: dict[str, str]) -> int:
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
         __file__, "--child", mode, str(port)],
        capture_output=True, text=True, env=env, check=True)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main(runs: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="smtp-magic-bench-"))  # the outbox and settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTP_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1",
               SMTP_MAGIC_OUTBOX=str(tmp / "outbox"), XDG_DATA_HOME=str(tmp / "data"),
               XDG_CONFIG_HOME=str(tmp / "config"))
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "smtp_magic")],
                   check=True)  # bytecode made before, as an installed package has it
    try:
        with servers(env) as ports:
            port = ports["sink"]
            counts: dict[str, list[int]] = {m: [] for m in MODES}
            for _ in range(runs):
                for mode in MODES:
                    counts[mode].append(instructions(mode, port, env))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = {mode: min(values) for mode, values in counts.items()}

    def millions(value: float) -> str:
        return f"{value / 1e6:6.0f}M"

    print(f"row 1a, 500 messages, minimum of {runs} run(s), valgrind Ir:")
    print(f"  send_many, fresh process   {millions(best['send'] - best['none'])}"
          f"  ({(best['send'] - best['none']) / 500 / 1e3:.0f}K a message)")
    print(f"  deliver, warm connection   {millions(best['deliver'] - best['prepared'])}"
          f"  ({(best['deliver'] - best['prepared']) / 500 / 1e3:.0f}K a message)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        work(sys.argv[2], int(sys.argv[3]))
    else:
        started = time.monotonic()
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
        print(f"({time.monotonic() - started:.0f} s)")
