"""The hourly baseline refresh beside the detection rounds, not in their way.

A refresh re-learns every subject's baselines once an hour (:func:`spendstream.detect.baseline.refresh`);
at 50M events it took minutes, and run inside the first round of the hour it held that hour's
alerts back as long. The passes do not need it to finish: they read the newest stored baselines
up to ``STALE_HOURS`` old. So a round only *starts* a refresh here, on a thread of its own, and goes
on with the previous hour's baselines; the next round after it ends uses the new ones.

- One refresh at a time per :class:`BackgroundRefresh` (keep one per process, as the round is):
  a round that finds one running does not start another, and an hour refreshed is not started again.
- Its long reads run on a second session where the store has one (embedded chdb runs two sessions'
  queries at once; the store's own session takes one query at a time, so a refresh on it would
  hold the rounds' queries for as long as each of its reads).
- A failure is kept until a round collects it (:meth:`failure`) and reports it as the ``baselines``
  detector's, then the refresh is tried again by the next round.

Two workers (a leader handing over while its refresh still runs) can refresh the same hour at
once: both write the same rows, which ``detector_baselines`` collapses; nothing is sent from here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime

from spendstream.detect import baseline
from spendstream.sinks.store import ArrowQuerier, SecondReader, Store

log = logging.getLogger(__name__)

Refresh = Callable[..., object]  # baseline.refresh's signature: (store, now, *, reader) -> subjects written


class BackgroundRefresh:
    """Runs ``refresh`` for an hour on a thread, at most one at a time."""

    def __init__(self, store: Store, *, refresh: Refresh = baseline.refresh) -> None:
        self.store, self._refresh = store, refresh
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._done_hour: datetime | None = None
        self._failed: BaseException | None = None

    def start(self, now: datetime) -> bool:
        """Start the refresh of ``now``'s hour unless one is running or that hour is done; whether it started."""
        hour = baseline.floor_hour(now)
        with self._lock:
            if (self._thread is not None and self._thread.is_alive()) or self._done_hour == hour:
                return False
            # a daemon: a process that stops mid-refresh loses only that refresh (its rows are one insert)
            self._thread = threading.Thread(target=self._run, args=(now, hour), daemon=True,
                                            name="spendstream-baseline-refresh")
            self._thread.start()
            return True

    def running(self) -> bool:
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def failure(self) -> BaseException | None:
        """The error of the last refresh if it failed and no round has collected it yet (then it is cleared)."""
        with self._lock:
            failed, self._failed = self._failed, None
            return failed

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for a running refresh; True if none is running now."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            return not thread.is_alive()
        return True

    def _run(self, now: datetime, hour: datetime) -> None:
        try:
            with self._reader() as reader:
                self._refresh(self.store, now, reader=reader)
        except Exception as exc:  # kept for the round to report, as a detector's failure is
            with self._lock:
                self._failed = exc
            return
        with self._lock:
            self._done_hour, self._failed = hour, None

    def _reader(self) -> AbstractContextManager[ArrowQuerier]:
        if isinstance(self.store, SecondReader):
            return self.store.second_reader()
        # a server or a store host: through the store itself, as the rollup maintainer's reads beside the rounds
        return nullcontext(self.store)
