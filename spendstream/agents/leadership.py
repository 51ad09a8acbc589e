"""Leading the worker group: when this worker may do the once-per-group work that has effects outside the
store (sending alerts), and a handover in which the old and the new leader never send at the same time.

faust elects one leader per group (the member assigned the one partition of
``<app id>-__assignor-__leader``) and fires ``@app.timer(..., on_leader=True)`` timers there only;
a timer's runs never overlap, because faust awaits each before the next tick. Left alone, that
still allows two senders during a handover: a pass that is running when a rebalance starts goes
on in its thread while the group moves on, and ``app.is_leader()`` stays true on the old leader
until its *new* assignment arrives. :class:`Tenure` closes that gap for every handover the old
leader takes part in (a worker joining, leaving, or shutting down):

1. When a rebalance starts (faust's partitions-revoked signal) or the worker shuts down, the
   tenure ends: the notifier asks ``may_send`` before every request, so none starts from now on,
   and the revocation waits until the running pass has recorded the outcomes of the requests
   already out. Kafka's (eager) rebalance cannot complete until this worker rejoins, so no other
   worker leads before those outcomes are in ``alert_deliveries``.
2. The tenure begins again when an assignment gives this worker the leader partition.

What it cannot close, because neither ClickHouse nor an HTTP receiver can reject a deposed
leader's write:

- a leader killed between a receiver's answer and the record: the next leader sends that
  delivery again (the window is one request and one insert: outcomes are recorded as they come);
- a leader that stalls (a pause, a swap storm, SIGSTOP) or is cut off from Kafka but not from the
  receivers for longer than the session timeout: the group elects another, which sends what the
  old one had in flight, while the old one still believes it leads until it talks to the group
  coordinator again. A late failure it records cannot reopen what the new leader settled (the
  outbox checks before recording a retry), but a request it already sent is received twice.

Receivers see such a duplicate with the same ``dedup_key`` and state: PagerDuty merges a repeated
trigger into the open incident (and a repeated resolve is a no-op); a webhook receiver can drop it
by (``dedup_key``, ``state``); Slack shows the message twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import faust

log = logging.getLogger(__name__)
T = TypeVar("T")


class Tenure:
    """Whether this worker may act as the group's leader now, and the leader work it has running."""

    def __init__(self) -> None:
        self._leading = threading.Event()  # read from delivery threads
        self._running: set[asyncio.Future[Any]] = set()  # every timer's work: two timers can run at once

    def active(self) -> bool:
        """True between an assignment that made this worker leader and the next revocation or shutdown."""
        return self._leading.is_set()

    def begin(self) -> None:
        self._leading.set()

    async def end(self, *, wait_s: float) -> bool:
        """Start no new leader work from now on; wait up to ``wait_s`` for the running work to finish. True if
        none is left running."""
        self._leading.clear()
        running = {f for f in self._running if not f.done()}
        if not running:
            return True
        _, pending = await asyncio.wait(running, timeout=wait_s)
        return not pending

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` in a thread, off the event loop, tracked so that :meth:`end` can wait for it.

        Cancelling the caller (faust stopping its timers) does not cancel the tracked future: the
        thread runs on either way, and :meth:`end` must still see when it is done."""
        running = asyncio.ensure_future(asyncio.to_thread(work))
        running.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved even if nobody awaits
        running.add_done_callback(self._running.discard)
        self._running.add(running)
        return await asyncio.shield(running)


def follow_leadership(app: faust.App, tenure: Tenure, *, handover_wait_s: float) -> None:
    """Begin and end ``tenure`` with ``app``'s leadership (see the module docstring for the order of a
    handover). ``handover_wait_s`` bounds how long a revocation or a shutdown waits for running work; keep it
    below faust's rebalance timeout, or the group rebalances without this worker and the overlap returns."""

    async def step_down(why: str) -> None:
        was_leading = tenure.active()
        if not await tenure.end(wait_s=handover_wait_s):
            log.warning("leader work still running %.0f s after %s; the next leader may send its in-flight "
                        "alerts again", handover_wait_s, why)
        elif was_leading:
            log.info("this worker no longer leads the group (%s); its leader work has stopped", why)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        await step_down("a rebalance started")

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        if app.is_leader():
            tenure.begin()
            log.info("this worker leads the group: it maintains rollups, runs the detectors and delivers alerts")

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: faust.App, **kwargs: Any) -> None:
        await step_down("shutting down")
