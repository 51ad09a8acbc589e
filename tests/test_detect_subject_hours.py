"""The refresh's stored subject-hours: each hour computed once, again when marked, always equal to raw FINAL."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from spendstream.detect import baseline, subject_hours
from spendstream.sinks.store import query_result
from tests.test_detect_rollups import _call, _write, raw_subject_hours

NOW = datetime(2022, 3, 16, 10, 0, tzinfo=timezone.utc)  # a Wednesday, in months no other test writes to
HOUR = timedelta(hours=1)


def _traffic(run: str) -> list[dict]:
    """Ten days of calls from a team, two features and four customers, some failing; the first feature's pairs
    served by two models (a call in five hours on gpt-4o-mini), the second's by one."""
    events: list[dict] = []
    start = NOW - timedelta(days=10)
    for h in range(10 * 24):
        for k in range(1 + h % 3):
            at = start + h * HOUR + timedelta(minutes=7 * k + h % 11, milliseconds=h)
            events.append(_call(run, len(events), at, team=f"{run}-t", feature=f"{run}-f{k % 2}",
                                customer=f"{run}-c{(h + k) % 4}", attempt=1 + (h + k) % 5 // 4,
                                status="ok" if (h + k) % 7 else "error", http_status=200 if (h + k) % 7 else 503,
                                model="gpt-4o-mini" if h % 5 == 0 and k == 0 else "gpt-4o"))
    return events


def _read(store, start: datetime, end: datetime) -> list[tuple]:
    """The reference of what a read keeps: every subject-hour, but a pair's models (``…,model=…``) only where the
    pair has two or more in the range (a pair's only model is the pair)."""
    rows = raw_subject_hours(store, start, end)
    models: dict[str, set[str]] = {}
    for row in rows:
        if ",model=" in row[0]:
            models.setdefault(row[0].split(",model=")[0], set()).add(row[0])
    return [row for row in rows if ",model=" not in row[0] or len(models[row[0].split(",model=")[0]]) > 1]


def _stored(store, start: datetime, end: datetime) -> list[list]:
    """The stored subject-hours, ordered as the reference orders them (the refresh reads them in no order)."""
    table = subject_hours.read(store, start=start, end=end)
    return sorted((list(row.values()) for row in table.to_pylist()), key=lambda row: (row[0].encode(), row[1]))


def _baselines(store, hour: datetime) -> list[list]:
    return query_result(store, """
        SELECT * EXCEPT written_at FROM detector_baselines FINAL WHERE for_hour = {h:DateTime('UTC')}
        ORDER BY subject""", {"h": f"{hour:%Y-%m-%d %H:%M:%S}"}).rows


@pytest.mark.integration
def test_stored_subject_hours_equal_raw_final_through_duplicates_a_conflict_and_late_events(seeded_store) -> None:
    store, run = seeded_store, f"sh-{uuid.uuid4().hex[:6]}"
    events = _traffic(run)
    _write(store, events)
    assert baseline.refresh(store, NOW)
    learned = (NOW - timedelta(hours=baseline.LAG_HOURS) - timedelta(days=baseline.LEARN_DAYS), NOW)
    assert _stored(store, *learned) == _read(store, *learned)
    kept = {row[0] for row in _stored(store, *learned)}
    assert f"feature={run}-f0,customer={run}-c0,model=gpt-4o-mini" in kept  # a pair's second model
    assert f"feature={run}-f1,customer={run}-c1,model=gpt-4o" not in kept   # a pair's only one
    assert subject_hours.ensure(store, store, [learned]) == 0  # computed once: nothing marked since

    # Re-deliveries change nothing; a conflicting copy is not applied; late events land in stored hours,
    # one of them from a customer the hour did not have.
    _write(store, events[:120], partition=1)
    _write(store, [{**events[3], "input_tokens": 9_000_000}], partition=2)
    late_at = NOW - timedelta(days=3) + timedelta(minutes=5)
    _write(store, [_call(f"{run}-late", 0, late_at, team=f"{run}-t", customer=f"{run}-c0"),
                   _call(f"{run}-late", 1, late_at, team=f"{run}-t", customer=f"{run}-new")])
    hour = NOW + HOUR
    assert baseline.refresh(store, hour)
    learned = (hour - timedelta(hours=baseline.LAG_HOURS) - timedelta(days=baseline.LEARN_DAYS), hour)
    stored = _stored(store, *learned)
    assert stored == _read(store, *learned)
    late_h = int((late_at.replace(minute=0) - learned[0]) / HOUR)
    assert [f"customer={run}-new", late_h, 1.0, 1.0, 0.0, 0.25] in stored

    # what the refresh learned from the stored hours is what it learns from the rollups and raw afresh
    incremental = _baselines(store, hour)
    store.command(f"DELETE FROM detector_subject_hours WHERE hour < '{hour:%Y-%m-%d %H:%M:%S}'")
    store.command(f"DELETE FROM detector_baselines WHERE for_hour = '{hour:%Y-%m-%d %H:%M:%S}'")
    assert baseline.refresh(store, hour)
    assert _baselines(store, hour) == incremental and len(incremental) > 4


@pytest.mark.integration
def test_an_hour_is_recomputed_only_when_marked_and_a_subject_that_leaves_it_leaves_the_read(embedded_store) -> None:
    run = f"shm-{uuid.uuid4().hex[:6]}"
    at = datetime(2022, 1, 12, 3, 20, tzinfo=timezone.utc)
    hours = (at.replace(minute=0) - 2 * HOUR, at.replace(minute=0) + 2 * HOUR)
    _write(embedded_store, [_call(run, 0, at, customer=f"{run}-a")])
    assert subject_hours.ensure(embedded_store, embedded_store, [hours]) == 4  # four hours, three of them empty
    assert subject_hours.ensure(embedded_store, embedded_store, [hours]) == 0
    _write(embedded_store, [_call(run, 1, at + timedelta(minutes=5), customer=f"{run}-a")])
    assert subject_hours.ensure(embedded_store, embedded_store, [hours]) == 1
    assert [r for r in _stored(embedded_store, *hours) if r[0] == f"customer={run}-a"] == [
        [f"customer={run}-a", 2, 2.0, 2.0, 0.0, 0.5]]
    # the hour's events gone (a retention, a delete by hand): marked again, the customer leaves the hour
    embedded_store.command(f"DELETE FROM usage_events WHERE customer = '{run}-a'")
    embedded_store.command(f"INSERT INTO rollup_marks (minute) VALUES ('{at:%Y-%m-%d %H:%M:00}')")
    assert subject_hours.ensure(embedded_store, embedded_store, [hours]) == 1
    assert _stored(embedded_store, *hours) == _read(embedded_store, *hours)
    assert not [r for r in _stored(embedded_store, *hours) if run in r[0]]


@pytest.mark.integration
def test_a_single_model_pair_stores_no_leaf_hours_and_a_two_model_pair_only_its_hours_with_two(embedded_store) -> None:
    """A pair's hour served by one model is that model's hour: its row names the model and no leaf row is stored;
    a read still has every leaf of a pair with two models, each hour of it, as raw FINAL (2022-07: no other test
    writes there)."""
    run = f"shl-{uuid.uuid4().hex[:6]}"
    start = datetime(2022, 7, 13, 0, 0, tzinfo=timezone.utc)
    hours = (start, start + 12 * HOUR)
    events = []
    for h in range(12):
        at = start + h * HOUR
        events.append(_call(run, len(events), at + timedelta(minutes=10), feature=f"{run}-two", customer=f"{run}-c"))
        if h % 6 == 0:  # the two-model pair's second model, in two hours of the twelve
            events.append(_call(run, len(events), at + timedelta(minutes=40), feature=f"{run}-two",
                                customer=f"{run}-c", model="gpt-4o-mini"))
        events.append(_call(run, len(events), at + timedelta(minutes=20), feature=f"{run}-one", customer=f"{run}-c"))
    _write(embedded_store, events)
    assert subject_hours.ensure(embedded_store, embedded_store, [hours]) == 12
    stored = query_result(embedded_store, """
        SELECT subject, toHour(hour), model FROM detector_subject_hours FINAL
        WHERE position(subject, {run:String}) > 0 AND startsWith(subject, 'feature=') AND position(subject, ',') > 0
        ORDER BY subject, hour""", {"run": run}).rows
    two, one = f"feature={run}-two,customer={run}-c", f"feature={run}-one,customer={run}-c"
    assert [r for r in stored if r[0].startswith(one)] == [[one, h, "gpt-4o"] for h in range(12)]  # no leaf row
    assert [r for r in stored if r[0] == two] == [[two, h, "" if h % 6 == 0 else "gpt-4o"] for h in range(12)]
    assert [r for r in stored if r[0].startswith(f"{two},model=")] == [
        [f"{two},model=gpt-4o", 0, ""], [f"{two},model=gpt-4o", 6, ""],
        [f"{two},model=gpt-4o-mini", 0, ""], [f"{two},model=gpt-4o-mini", 6, ""]]
    read = _stored(embedded_store, *hours)
    assert read == _read(embedded_store, *hours)
    assert [r[1] for r in read if r[0] == f"{two},model=gpt-4o"] == list(range(12))
    assert not [r for r in read if r[0].startswith(f"{one},model=")]
