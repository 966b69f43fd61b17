"""Run every smtp_magic benchmark against its peers, interleaved, and check the goals (issues 8, 15).

    python benchmarks/run.py [--rounds N] [--out benchmarks/results.md] [--only SCENARIO ...]

Starts Postfix's smtp-sink and an aiosmtpd server on free loopback ports (both stop by
themselves), runs each measurement in a fresh process (``scenarios.py``), round after round
with the peers interleaved, then prints medians and PASS/MISS per goal and writes results.md.
Peers that are not installed are skipped with a note: pip install -r benchmarks/requirements.txt
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios.py"
SERVER_LIFETIME = 600  # seconds; the servers stop by themselves even if this script is killed
ATTACHMENT_BYTES = 10 * 1024 * 1024  # 10 MiB: the largest attachment the settings allow
CHILD_TIMEOUT = 180

BULK_PEERS = ["smtplib", "aiosmtplib", "yagmail", "redmail", "smtp_magic", "smtp_magic_autotext",
              "smtp_magic_defaults", "smtp_magic_public", "smtp_magic_dkim_ed25519",
              "smtp_magic_dkim_rsa", "raw_pipelined"]
SCENARIO_NAMES = ["bulk", "attachment", "load_ext", "kernel", "stream", "render", "million"]
STREAM_COUNT = 100_000
MILLION_COUNT = 1_000_000
MILLION_TIMEOUT = 3000  # seconds; the servers live longer (SERVER_LIFETIME)
ATTACHMENT_PEERS = ["smtplib", "aiosmtplib", "yagmail", "redmail", "smtp_magic"]
MODULE_OF = {"yagmail": "yagmail", "redmail": "redmail", "sql": "sql", "aiosmtplib": "aiosmtplib",
             "smtp_magic_dkim_ed25519": "dkim", "smtp_magic_dkim_rsa": "dkim"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers on 127.0.0.1:{port}")


def find_smtp_sink() -> str | None:
    for candidate in ("/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("smtp-sink")


@contextlib.contextmanager
def servers(env: dict[str, str], lifetime: int = SERVER_LIFETIME) -> Iterator[dict[str, int]]:
    sink = find_smtp_sink()
    if sink is None:
        raise SystemExit("smtp-sink not found: apt-get install postfix (it ships /usr/sbin/smtp-sink)")
    ports = {"sink": free_port(), "stall": free_port()}
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # smtp-sink refuses to stay root
    procs = [
        subprocess.Popen(["timeout", str(lifetime), sink, *user, "-4",
                          f"127.0.0.1:{ports['sink']}", "256"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(["timeout", str(lifetime), sys.executable, str(SCENARIOS),
                          "stall_server", str(ports["stall"]), "2", str(lifetime)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env),
    ]
    try:
        wait_for_port(ports["sink"])
        wait_for_port(ports["stall"])
        yield ports
    finally:
        for proc in procs:  # only the processes started here, by their id
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def child(env: dict[str, str], *args: str, timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
    try:
        done = subprocess.run([sys.executable, str(SCENARIOS), *args], capture_output=True,
                              text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:200]}
    return json.loads(lines[-1])


def compile_package() -> None:
    """Byte-compile smtp_magic as installing a package does (pip compiles at install time). The
    children run with PYTHONDONTWRITEBYTECODE: without this, a checkout that has no __pycache__
    yet has every module imported after a measurement starts (the renderer, on the first send)
    compiled from source inside it -- 10 ms of a 0.1 s bulk run -- where the peers' installed
    modules are read from bytecode."""
    compileall.compile_dir(str(HERE.parent / "smtp_magic"), quiet=1)


def available(name: str) -> bool:
    module = MODULE_OF.get(name)
    return module is None or importlib.util.find_spec(module) is not None


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "machine": platform.machine(), "cpu": f"{cpu}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def render_goal() -> dict[str, Any]:
    script = HERE / "bench_render.py"
    if not script.exists():
        return {"error": "benchmarks/bench_render.py is missing"}
    try:
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        return {"error": "bench_render.py timed out"}
    found = re.search(r"\(([\d.]+) ms, ([\d.]+) MB\)", done.stdout)
    if not found:
        tail = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["?"])[-1]
        return {"error": f"bench_render.py: {tail[:200]}"}
    return {"ms": float(found.group(1)), "mb": float(found.group(2)), "output": done.stdout}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every scenario (3)")
    parser.add_argument("--out", default=str(HERE / "results.md"), help="results table (markdown)")
    parser.add_argument("--only", nargs="+", choices=SCENARIO_NAMES, default=SCENARIO_NAMES,
                        help="run only these scenarios (a quick look; results.md is then not "
                        "written unless --out is given)")
    options = parser.parse_args()
    only = set(options.only)
    if only != set(SCENARIO_NAMES) and options.out == str(HERE / "results.md"):
        options.out = os.devnull

    notes: list[str] = []
    bulk_peers = [p for p in BULK_PEERS if available(p)]
    attachment_peers = [p for p in ATTACHMENT_PEERS if available(p)]
    for peer in sorted(set(BULK_PEERS) - set(bulk_peers)):
        notes.append(f"{peer} is not installed: skipped (pip install -r benchmarks/requirements.txt)")
    extensions = ["smtp_magic"] + (["sql"] if available("sql") else [])
    if "sql" not in extensions:
        notes.append("jupysql is not installed: goal 3 has no reference (pip install jupysql)")

    tmp = Path(tempfile.mkdtemp(prefix="smtp-magic-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTP_")}
    env.update(SMTP_MAGIC_OUTBOX=str(tmp / "outbox"), XDG_DATA_HOME=str(tmp / "data"),
               IPYTHONDIR=str(tmp / "ipython"), JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"),
               JUPYTER_DATA_DIR=str(tmp / "jupyter-data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"), PYTHONDONTWRITEBYTECODE="1")
    env["JUPYTER_PATH"] = str(Path(sys.prefix) / "share" / "jupyter")  # the venv's kernelspec
    attachment_file = tmp / "attachment.bin"
    attachment_file.write_bytes(os.urandom(ATTACHMENT_BYTES))
    compile_package()

    results: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    started = time.monotonic()
    try:
        with servers(env, SERVER_LIFETIME + (MILLION_TIMEOUT if "million" in only else 0)) as ports:
            for rnd in range(options.rounds):
                shift = rnd % len(bulk_peers)  # interleaved, in a rotating order
                for peer in bulk_peers[shift:] + bulk_peers[:shift] if "bulk" in only else []:
                    results["bulk"][peer].append(child(env, "bulk", peer, str(ports["sink"])))
                for peer in attachment_peers[shift % len(attachment_peers):] + attachment_peers[
                        :shift % len(attachment_peers)] if "attachment" in only else []:
                    results["attachment"][peer].append(
                        child(env, "attachment", peer, str(ports["sink"]), str(attachment_file)))
                for ext in (extensions if rnd % 2 == 0 else extensions[::-1]) \
                        if "load_ext" in only else []:
                    results["load_ext"][ext].append(child(env, "load_ext", ext))
                print(f"round {rnd + 1}/{options.rounds} done ({time.monotonic() - started:.0f} s)",
                      flush=True)
            if "kernel" not in only:
                pass
            elif importlib.util.find_spec("jupyter_client") and importlib.util.find_spec("ipykernel"):
                results["kernel"]["smtp_magic"].append(child(env, "kernel", str(ports["stall"])))
            else:
                notes.append("jupyter_client/ipykernel missing: goal 4 not measured")
            if "stream" in only:  # once: ~25 s, and memory is not noisy
                results["stream"]["smtp_magic"].append(
                    child(env, "stream", str(STREAM_COUNT), str(ports["sink"])))
            if "million" in only:  # once: several minutes
                results["million"]["smtp_magic"].append(
                    child(env, "million", str(MILLION_COUNT), str(ports["sink"]),
                          timeout=MILLION_TIMEOUT))
        render = render_goal() if "render" in only else {}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for scenario, peers in results.items():
        for peer, runs in peers.items():
            errors = [r["error"] for r in runs if "error" in r]
            if errors:
                notes.append(f"{scenario}/{peer}: {len(errors)} of {len(runs)} runs failed: {errors[0]}")

    def ok(scenario: str, peer: str) -> list[dict[str, Any]]:
        return [r for r in results[scenario].get(peer, []) if "error" not in r]

    def med(scenario: str, peer: str, key: str) -> float:
        return median([r[key] for r in ok(scenario, peer)])

    rows: list[tuple[str, str, str, str, str, str]] = []  # goal, ours, peer, ratio, target, verdict

    def verdict(passed: bool | None) -> str:
        return "n/a" if passed is None else ("PASS" if passed else "MISS")

    # Goal 1: bulk, the text part given (1) and generated from the HTML (1'); 1'' the fallback
    ref = med("bulk", "smtplib", "seconds")
    for label, peer, goal in (
            ("1. bulk: 500 distinct ~2 KB text+HTML messages to smtp-sink (msg/s)",
             "smtp_magic", 5),
            ("1'. same, only HTML given: the text alternative generated from it",
             "smtp_magic_autotext", 5),
            ("1a. same as 1', as request dicts (the connector's JSON format) with default settings "
             "(security auto)",
             "smtp_magic_defaults", 8),
            ("1''. same as 1 with every shortcut off (SMTP_MAGIC_NO_SHORTCUTS=1: EmailMessage + "
             "aiosmtplib's sendmail)", "smtp_magic_public", 0)):
        ours = med("bulk", peer, "seconds")
        if ours != ours or ref != ref:
            continue
        ratio = ref / ours
        rows.append((label, f"{500 / ours:,.0f}/s",
                     f"smtplib, one reused connection: {500 / ref:,.0f}/s", f"{ratio:.1f}x",
                     f">= {goal}x" if goal else "(no goal)",
                     verdict(ratio >= goal) if goal else "info"))
    # 1b: the distance to the speed limit (pre-built bytes, pipelined, over the same server)
    limit = med("bulk", "raw_pipelined", "seconds")
    defaults = med("bulk", "smtp_magic_defaults", "seconds")
    if limit == limit and defaults == defaults:
        rows.append(("1b. 1a. as a share of the speed limit: the same messages built before the timing, "
                     "written by a minimal pipelining asyncio client over one connection",
                     f"{500 / defaults:,.0f}/s", f"raw pipelined bytes: {500 / limit:,.0f}/s",
                     f"{limit / defaults:.0%} of the limit", "(no goal)", "info"))
    # Goal 1d: DKIM signing costs at most half the unsigned rate (Ed25519; RSA 2048 for information)
    unsigned = med("bulk", "smtp_magic", "seconds")
    for label, peer, goal in (
            ("1d. same as 1, every message DKIM-signed with Ed25519 (ed25519-sha256)",
             "smtp_magic_dkim_ed25519", True),
            ("1d'. same, signed with RSA 2048 (rsa-sha256)", "smtp_magic_dkim_rsa", False)):
        signed = med("bulk", peer, "seconds")
        if signed != signed or unsigned != unsigned:
            continue
        ratio = unsigned / signed
        rows.append((label, f"{500 / signed:,.0f}/s", f"unsigned (1.): {500 / unsigned:,.0f}/s",
                     f"{ratio:.2f}x the unsigned rate", ">= 0.5x" if goal else "(no goal)",
                     verdict(ratio >= 0.5) if goal else "info"))
    # Goal 2: attachment
    size = ATTACHMENT_BYTES
    extra = med("attachment", "smtp_magic", "extra_bytes")
    t_ours, t_ref = med("attachment", "smtp_magic", "seconds"), med("attachment", "smtplib", "seconds")
    ref_extra = med("attachment", "smtplib", "extra_bytes")
    if extra == extra:
        rows.append(("2a. one 10 MiB attachment: extra peak RSS (VmHWM)", f"{extra / 1e6:.1f} MB",
                     f"smtplib: {ref_extra / 1e6:.1f} MB ({ref_extra / size:.1f}x)",
                     f"{extra / size:.2f}x the attachment", "<= 2.5x",
                     verdict(extra / size <= 2.5)))
        rows.append(("2b. one 10 MiB attachment: wall time", f"{t_ours:.3f} s",
                     f"smtplib: {t_ref:.3f} s", f"{t_ours / t_ref:.2f}x", "<= 0.5x",
                     verdict(t_ours / t_ref <= 0.5)))
    # Goal 3: %load_ext
    l_ours = med("load_ext", "smtp_magic", "seconds")
    heavy = sorted({m for r in ok("load_ext", "smtp_magic") for m in r["heavy"]})
    if "sql" in extensions and l_ours == l_ours:
        l_ref = med("load_ext", "sql", "seconds")
        rows.append(("3. %load_ext in a fresh IPython shell", f"{l_ours * 1e3:.0f} ms"
                     + (f", imports {', '.join(heavy)}" if heavy else ", no pandas/matplotlib/"
                        "ipywidgets/aiosmtplib"),
                     f"%load_ext sql (jupysql): {l_ref * 1e3:.0f} ms", f"{l_ours / l_ref:.3f}x",
                     "<= 0.1x, none of those imported",
                     verdict(l_ours / l_ref <= 0.1 and not heavy)))
    # Goal 4: kernel
    kernel = ok("kernel", "smtp_magic")
    if kernel:
        k = kernel[0]
        extra_ms = (k["send"] - k["empty"]) * 1e3
        rows.append(("4. async %%smtp_send in a kernel (allow_stdin), server stalls 2 s",
                     f"{k['send'] * 1e3:.1f} ms" + (f" ({k['errors'][0]})" if k["errors"] else ""),
                     f"empty cell: {k['empty'] * 1e3:.1f} ms", f"+{extra_ms:.1f} ms",
                     "<= +5 ms", verdict(extra_ms <= 5 and not k["errors"])))
    # Goal 5: render (bench_render.py, owned by the render helper)
    if "error" in render:
        notes.append(render["error"])
    elif render:
        rows.append(("5. 1000 x 10 DataFrame -> email HTML (bench_render.py)",
                     f"{render['ms']:.1f} ms, {render['mb']:.2f} MB", "", "",
                     "<= 200 ms, <= 1 MB", verdict(render["ms"] <= 200 and render["mb"] <= 1)))

    # Goal 6: a 100,000-row send_many from a generator, peak memory of the whole process
    stream = ok("stream", "smtp_magic")
    if stream:
        st = stream[0]
        rows.append((f"6. send_many of {st['count']:,} generated requests to smtp-sink: peak RSS",
                     f"{st['peak_bytes'] / 1e6:.0f} MB ({st['rate']:,.0f} msg/s)",
                     f"process before the send: {st['before_bytes'] / 1e6:.0f} MB", "",
                     "< 300 MB", verdict(st["peak_bytes"] < 300e6)))

    # Goal 7: Mailer.iter_send_many over a million generated requests, in constant memory
    million = ok("million", "smtp_magic")
    if million:
        mi = million[0]
        rows.append((f"7. iter_send_many over {mi['count']:,} generated requests to smtp-sink: "
                     "all delivered, peak RSS", f"{mi['peak_bytes'] / 1e6:.0f} MB "
                     f"({mi['rate']:,.0f} msg/s, {mi['seconds']:.0f} s)",
                     f"process before the send: {mi['before_bytes'] / 1e6:.0f} MB", "",
                     "< 150 MB", verdict(mi["peak_bytes"] < 150e6)))

    info = machine()
    detail = ["| peer | bulk msg/s | 10 MiB attachment: time | extra peak RSS |",
              "| --- | ---: | ---: | ---: |"]
    for peer in BULK_PEERS:
        b = med("bulk", peer, "seconds")
        a, x = med("attachment", peer, "seconds"), med("attachment", peer, "extra_bytes")
        if b != b and a != a:
            continue
        detail.append(f"| {peer} | {500 / b:,.0f} | " + (f"{a:.3f} s | {x / 1e6:.1f} MB ({x / size:.1f}x) |"
                                                       if a == a else "– | – |"))
    lines = [
        "# smtp_magic benchmark results", "",
        f"Machine: `{info['machine']}`, {info['cpu']}, Python {info['python']}, {info['date']}.",
        f"Command: `python benchmarks/run.py --rounds {options.rounds}` "
        f"(medians of {options.rounds} interleaved rounds, each measurement in a fresh process; "
        f"wall time {time.monotonic() - started:.0f} s).", "",
        "| goal | ours | peer | ratio | target | result |", "| --- | --- | --- | --- | --- | --- |",
        *(f"| {' | '.join(row)} |" for row in rows), "",
        "All peers (medians):", "", *detail, "",
        "Notes:", "",
        "- Bulk peers get the same 500 (to, subject, text, html) messages; smtp_magic gets them as "
        "SendRequests with the text alternative given (1'. lets html_to_text make it).",
        "- smtp_magic runs from bytecode compiled before the rounds, as an installed package does "
        "(the measurements run with PYTHONDONTWRITEBYTECODE).",
        "- The attachment is 10 MiB (10,485,760) random bytes, the largest the settings allow "
        "(attachment_size is at most 10 MB, counted as 2^20 bytes). Extra peak RSS = VmHWM after the "
        "send minus VmRSS before it, after a warm-up send of a small file.",
        "- Goal 4 counts from execute_request to execute_reply, median of 7, against an aiosmtpd "
        "server whose DATA reply takes 2 s.",
        "- Goal 6 runs once: 100,000 distinct ~0.5 KB text+HTML messages from a generator through "
        "one send_many call (all Responses kept, as the API returns them); VmHWM of that process.",
        "- Goal 7 runs once (a few minutes): 1,000,000 distinct ~0.3 KB text+HTML messages from a "
        "generator through one Mailer.iter_send_many, each Response counted and dropped; every "
        "message must be accepted; VmHWM of that process.",
        *(f"- {n}" for n in notes),
    ]
    text = "\n".join(lines) + "\n"
    Path(options.out).write_text(text, encoding="utf-8")
    print()
    print(text)
    return 0 if all(r[5] in ("PASS", "info") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
