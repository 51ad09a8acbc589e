"""What a stretch of code costs the embedded store, counted rather than timed: for benches on a shared machine.

    with tally() as cost:
        rollups.maintain(store, now=...)
    cost.statements, cost.rows_read, cost.cpu_s

Counts every statement run through ``spendstream.sinks.embedded`` (any session) while a ``tally`` is open
in the counting thread, and the rows chdb read from storage for them; ``cpu_s`` is the process's CPU time
over the block (chdb's query threads included, and any background merge running meanwhile). Wall time on
a machine other sessions load says more about them than about the code; these do not.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from spendstream.sinks import embedded


@dataclass
class Cost:
    statements: int = 0
    rows_read: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    rows_by_target: dict[str, int] = field(default_factory=dict)  # rows read, by the table a statement inserts into

    def add(self, other: Cost) -> None:
        self.statements += other.statements
        self.rows_read += other.rows_read
        self.cpu_s += other.cpu_s
        self.wall_s += other.wall_s
        for target, rows in other.rows_by_target.items():
            self.rows_by_target[target] = self.rows_by_target.get(target, 0) + rows

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_statements": self.statements, f"{prefix}_rows_read": self.rows_read,
                f"{prefix}_cpu_s": round(self.cpu_s, 3), f"{prefix}_wall_s": round(self.wall_s, 3),
                f"{prefix}_rows_by_target": dict(sorted(self.rows_by_target.items(), key=lambda kv: -kv[1]))}


_open = threading.local()
_INSERT = re.compile(r"\s*INSERT INTO (\w+)")
_original = embedded._output


def _counted(session, sql, fmt, params):  # noqa: ANN001, ANN202 (the patched function's own signature)
    cost: Cost | None = getattr(_open, "cost", None)
    if cost is None:
        return _original(session, sql, fmt, params)
    try:
        raw = session.query(sql, fmt, params=params or None)
    except Exception as exc:
        raise embedded.StoreError(str(exc)) from exc
    rows = int(raw.storage_rows_read()) if hasattr(raw, "storage_rows_read") else 0
    cost.statements += 1
    cost.rows_read += rows
    target = _INSERT.match(sql)
    name = target.group(1) if target else "(queries)"
    cost.rows_by_target[name] = cost.rows_by_target.get(name, 0) + rows
    return raw.bytes() if hasattr(raw, "bytes") else str(raw).encode()


embedded._output = _counted


@contextmanager
def tally() -> Iterator[Cost]:
    """Count what the block costs the store (statements from this thread only)."""
    cost = Cost()
    _open.cost = cost
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        yield cost
    finally:
        cost.cpu_s = time.process_time() - cpu
        cost.wall_s = time.perf_counter() - wall
        _open.cost = None
