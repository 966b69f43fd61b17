"""Benchmark: CPU per message of each message stage, and of making them one by one vs stage by
stage, for the bulk benchmark's 500 HTML-only messages given as request dicts (row 1a).

    python benchmarks/bench_stages.py [ROUNDS]

No server: it only makes the messages, as ``send_many`` does before sending. Each figure is the
minimum over ROUNDS (default 5) of the process CPU time, in microseconds per message: the
machine's other work only ever adds time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from benchmarks.scenarios import SENDER, messages
from smtp_magic import stages
from smtp_magic._requests import as_request
from smtp_magic.engine import Mailer


def per_message(run: Callable[[], Any], count: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best / count * 1e6


def stage_time(index: int, parsed: list[Any], settings: Any, rounds: int) -> float:
    """The least CPU time stage ``index`` takes over the messages the stages before it made."""
    best = float("inf")
    for _ in range(rounds):
        drafts = [stages.Draft(request, settings) for request in parsed]
        for earlier in stages.STAGES[:index]:
            drafts = [earlier(d) for d in drafts]
        stage = stages.STAGES[index]
        started = time.process_time()
        drafts = [stage(d) for d in drafts]
        best = min(best, time.process_time() - started)
    return best


def main(rounds: int) -> None:
    requests = [{"action": "send", "to": to, "subject": subject, "body": html,
                 "content-type": "text/html"} for to, subject, _, html in messages()]
    _, settings = Mailer({"target": "127.0.0.1", "port": 25, "from": SENDER})._settings_for(None)
    assert settings is not None
    parsed = [as_request(r)[0] for r in requests]
    pairs = [(request, settings) for request in parsed]
    stages.prepare_many(pairs[:5])  # first use: skeletons, compiled expressions
    n = len(requests)

    print(f"{n} messages, CPU per message (us), minimum of {rounds} rounds")
    print(f"{'request dict -> request':28s} {per_message(lambda: [as_request(r) for r in requests], n, rounds):7.1f}")
    for i, stage in enumerate(stages.STAGES):
        print(f"  stage {stage.__name__:20s} {stage_time(i, parsed, settings, rounds) / n * 1e6:7.1f}")
    one_by_one = per_message(lambda: [stages.prepare(r, s) for r, s in pairs], n, rounds)
    by_stage = per_message(lambda: stages.prepare_many(pairs), n, rounds)
    print(f"{'all stages, one by one':28s} {one_by_one:7.1f}")
    print(f"{'all stages, stage by stage':28s} {by_stage:7.1f}  ({by_stage / one_by_one:.2f}x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
