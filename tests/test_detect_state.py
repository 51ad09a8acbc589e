"""Open incidents saved and read back (``detect/state.py``) through a real embedded store: every field as it was
(the opening instant to the millisecond, floats to the last bit), a closed one gone, marks by time; and a pass's
changes written as one Arrow block, however many incidents it stepped (a VALUES statement of bound parameters cost
the engine ~1 ms of CPU a row: 50 open incidents, ~50 ms a pass)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from spendstream.detect import state
from spendstream.detect.incidents import Incident

NOW = datetime(2020, 12, 14, 9, 30, 15, 123456, tzinfo=timezone.utc)  # (this file's month: 2020-12)


class Counting:
    """The real store, counting what reaches it."""

    def __init__(self, store) -> None:
        self.store, self.statements, self.inserts = store, 0, 0

    def query_text(self, sql: str, params=None, fmt: str = "PrettyCompact") -> str:
        self.statements += 1
        return self.store.query_text(sql, params, fmt)

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        self.inserts += 1
        self.store.insert_arrow(table, data)


@pytest.mark.integration
def test_fifty_changed_incidents_are_one_insert_and_read_back_exactly(embedded_store) -> None:
    kind, mark = f"test_state_{uuid.uuid4().hex[:8]}", f"test_state_mark_{uuid.uuid4().hex[:8]}"
    opened = [NOW - timedelta(minutes=k, microseconds=k * 777) for k in range(50)]
    saved = [Incident(kind, f"customer=c{k},x'\\", "firing" if k % 2 else "pending", opened[k],
                      "error" if k % 3 else "warning", hot_passes=k + 1, calm_passes=k % 4, peak=0.1 + 0.2 * k,
                      wasted_usd=1 / 3 + k, root=f"spend_anomaly:team=t{k}:2020-12-14T09:{k:02d}" if k % 5 else "")
             for k in range(50)]
    counting = Counting(embedded_store)
    state.save(counting, [((kind, i.subject), None, i) for i in saved], now=NOW,
               marks=[(mark, "feature=f"), (mark, "feature=g")])
    assert (counting.statements, counting.inserts) == (0, 1)
    incidents, marks = state.load(embedded_store, [kind], marks={mark: NOW - timedelta(seconds=1)})
    assert incidents == {(kind, i.subject): i.__class__(**{
        **{f: getattr(i, f) for f in i.__dataclass_fields__},
        "opened_at": i.opened_at.replace(microsecond=i.opened_at.microsecond // 1000 * 1000)}) for i in saved}
    at = NOW.replace(microsecond=NOW.microsecond // 1000 * 1000)
    assert marks == {(mark, "feature=f"): at, (mark, "feature=g"): at}
    # the next pass: one resolved (closed), one stepped, the rest unchanged (not written again)
    later = NOW + timedelta(minutes=1)
    stepped = Incident(**{**{f: getattr(saved[1], f) for f in saved[1].__dataclass_fields__}, "hot_passes": 99})
    counting = Counting(embedded_store)
    state.save(counting, [((kind, saved[0].subject), saved[0], None), ((kind, saved[1].subject), saved[1], stepped),
                          *(((kind, i.subject), i, i) for i in saved[2:])], now=later)
    assert (counting.statements, counting.inserts) == (0, 1)
    incidents = state.load_open(embedded_store, [kind])
    assert (kind, saved[0].subject) not in incidents and len(incidents) == 49
    assert incidents[(kind, saved[1].subject)].hot_passes == 99
    state.save(Counting(embedded_store), [], now=later)  # nothing changed: nothing written
