"""Writes a processed batch to ClickHouse, retrying until it is durable."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TypeVar

import pyarrow as pa

from spendstream.batches import BatchResult, DeadLetter, GpuBatch, LedgerBatch
from spendstream.emitter.backoff import backoff_s
from spendstream.schemas.alert import Alert
from spendstream.sinks.conflicts import CONFLICT_SCHEMA, recheck, resolve
from spendstream.sinks.live_slices import marks_of
from spendstream.sinks.rollups import minutes_of
from spendstream.sinks.rows import alert_table, dead_letter_table, gpu_sample_table, ledger_table, usage_table
from spendstream.sinks.store import Store, StoreError

log = logging.getLogger(__name__)
T = TypeVar("T")


class WriteTally:
    """What a writer made durable since it started, safe to read from any thread (the worker's metrics).

    ``stored``: rows inserted, by what they are (``usage``, ``gpu``, ``ledger``); ``redelivered``:
    usage events dropped as identical copies of stored ones; ``conflicts``: conflicting copies
    recorded, not applied; ``dead_letters``: by (what the record was, the reason's kind);
    ``store_retries``: failed inserts retried.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, ...]] = Counter()

    def add(self, *key: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self._counts[key] += n

    def dead(self, of: str, letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            self.add("dead_letters", of, letter.kind)

    def snapshot(self) -> dict[tuple[str, ...], int]:
        with self._lock:
            return dict(self._counts)


class SinkWriter:
    """Inserts priced rows, dead letters and the alerts it is given; never drops a batch.

    A failed insert is retried with jittered backoff for as long as it takes.
    While it retries the agent does not pull more records, so consumption pauses
    (backpressure) instead of the worker crashing or dropping data. Both tables
    are keyed so that inserting the same batch twice stores it once, which makes
    a retry after a partial success harmless.
    """

    def __init__(self, store: Store, *, retry_base_s: float = 0.2, retry_cap_s: float = 10.0,
                 dedup_horizon_s: float = 0.0, billing_policy: str = "computed") -> None:
        self._store = store
        self._billing_policy = billing_policy
        self._dedup_horizon_s = dedup_horizon_s
        self._retry_base_s = retry_base_s
        self._retry_cap_s = retry_cap_s
        self.tally = WriteTally()
        # alert keys already stored by this process (the table dedups across processes)
        self._alerted: set[str] = set()
        # One usage batch at a time, check and insert together: the next batch's conflict
        # check must see this one's rows (batch k's insert may still run while k+1 arrives).
        self._serial = threading.Lock()

    async def write(self, batch: BatchResult, alerts: Sequence[Alert] = ()) -> pa.Table:
        """The batch's new events, its dead letters and ``alerts``; returns the conflicting copies
        it found (``event_conflicts`` rows, recorded, not applied) for the caller to alert on."""
        return await self._durably(lambda: self._write_now(batch, alerts))

    async def write_alerts(self, alerts: Sequence[Alert]) -> None:
        await self._durably(lambda: self._insert_alerts(alerts))

    async def write_gpu(self, batch: GpuBatch, alerts: list[Alert]) -> None:
        """GPU samples, their dead letters, and the alerts the detectors raised on them."""
        def insert() -> None:
            if batch.samples:
                samples = gpu_sample_table(batch.samples)
                self._store.insert_arrow("gpu_samples", samples)
                # after the rows are durable: the minutes whose GPU cost allocation to recompute (gpu_views.py)
                self._store.insert_arrow("gpu_marks", minutes_of(samples["ts"]))
            if batch.dead_letters:
                self._store.insert_arrow("dead_letters", dead_letter_table(batch.dead_letters))
            if alerts:
                self._store.insert_arrow("alerts", alert_table(alerts))
                for alert in alerts:
                    log.warning("alert %s %s: %s", alert.kind, alert.state, alert.message)
            self.tally.add("stored", "gpu", n=len(batch.samples))
            self.tally.dead("gpu", batch.dead_letters)

        await self._durably(insert)

    async def write_ledger(self, batch: LedgerBatch) -> None:
        def insert() -> None:
            if batch.entries:
                self._store.insert_arrow("emitter_ledger", ledger_table(batch.entries))
            if batch.dead_letters:
                self._store.insert_arrow("dead_letters", dead_letter_table(batch.dead_letters))
            self.tally.add("stored", "ledger", n=len(batch.entries))
            self.tally.dead("ledger", batch.dead_letters)

        await self._durably(insert)

    async def _durably(self, insert: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return await asyncio.to_thread(insert)
            except StoreError as exc:
                delay = backoff_s(attempt, base_s=self._retry_base_s, cap_s=self._retry_cap_s)
                attempt += 1
                self.tally.add("store_retries")
                log.warning("ClickHouse write failed (attempt %d), retrying in %.1fs: %s", attempt, delay, exc)
                await asyncio.sleep(delay)

    def _write_now(self, batch: BatchResult, alerts: Sequence[Alert]) -> pa.Table:
        # One batch at a time (see _serial): the conflict check of a batch sees every row this
        # worker stored before it (conflicts.py says what it cannot see).
        with self._serial:
            now = datetime.now(timezone.utc)
            conflicts = CONFLICT_SCHEMA.empty_table()
            if batch.num_events:
                resolution = resolve(self._store, usage_table(batch, now=now, billing_policy=self._billing_policy),
                                     horizon_s=self._dedup_horizon_s,
                                     now=now)
                conflicts = resolution.conflicts
                if resolution.rows.num_rows:
                    self._store.insert_arrow("usage_events", resolution.rows)
                    # after the rows are durable: the minutes and slices to recompute (sinks/rollups.py)
                    self._store.insert_arrow("rollup_marks", marks_of(resolution.rows["ts"]))
                    # another worker may have stored a conflicting copy of a new id meanwhile
                    conflicts = pa.concat_tables([conflicts, recheck(self._store, resolution, now=now)])
                if conflicts.num_rows:
                    self._store.insert_arrow("event_conflicts", conflicts)
                self.tally.add("stored", "usage", n=resolution.rows.num_rows)
                self.tally.add("redelivered", n=resolution.redelivered)
                self.tally.add("conflicts", n=conflicts.num_rows)
            if batch.dead_letters:
                self._store.insert_arrow("dead_letters", dead_letter_table(batch.dead_letters))
            self.tally.dead("usage", batch.dead_letters)
            self._insert_alerts(alerts)
            return conflicts

    def _insert_alerts(self, alerts: Sequence[Alert]) -> None:
        fresh = [a for a in alerts if a.dedup_key not in self._alerted]
        if fresh:
            self._store.insert_arrow("alerts", alert_table(fresh))
            self._alerted.update(a.dedup_key for a in fresh)
            for alert in fresh:
                log.warning("alert %s: %s — %s", alert.kind, alert.subject, alert.message)
