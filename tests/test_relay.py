"""The one way work on other threads reaches the notebook (smtp_magic._relay.Relay)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading

from smtp_magic._relay import Relay

where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="elsewhere")


def test_a_queued_relay_runs_everything_on_the_waiting_thread_in_order() -> None:
    relay = Relay(queued=True)
    ran: list[tuple[int, int]] = []
    me = threading.get_ident()

    def worker() -> None:
        for i in range(50):
            relay.post(lambda i=i: ran.append((i, threading.get_ident())))
        relay.post(lambda: ran.append((-1, threading.get_ident())), last=True)

    threading.Thread(target=worker).start()
    relay.serve()  # returns once the last thing posted has run
    assert [i for i, _ in ran] == [*range(50), -1]
    assert {thread for _, thread in ran} == {me}


def test_released_the_outcome_still_arrives_and_redraws_are_dropped() -> None:
    async def main() -> list[str]:
        relay = Relay(queued=True)  # made on the loop: released, it posts there
        ran: list[str] = []
        relay.post(lambda: ran.append("redraw"))
        relay.post(lambda: ran.append("outcome"), last=True)
        relay.release()  # the wait was interrupted before serving anything
        relay.post(lambda: ran.append("later"))
        await asyncio.sleep(0.05)
        return ran

    assert asyncio.run(main()) == ["outcome", "later"]


def test_on_a_loop_callbacks_run_there_in_the_makers_context() -> None:
    async def main() -> tuple[str, int, int]:
        where.set("the cell")
        relay = Relay()
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        got: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        relay.when_done(future, lambda f: got.set_result((where.get(), threading.get_ident())))
        where.set("changed since")
        threading.Thread(target=future.set_result, args=(1,)).start()
        context, thread = await asyncio.wait_for(got, 5)
        return context, thread, threading.get_ident()

    context, thread, loop_thread = asyncio.run(main())
    assert context == "the cell" and thread == loop_thread


def test_without_a_loop_it_runs_at_once() -> None:
    relay = Relay()
    ran: list[int] = []
    relay.post(lambda: ran.append(1))
    assert ran == [1]
