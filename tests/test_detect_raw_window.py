"""A round copies its fast window's raw events once (``detect.raw_window``): every statement that reads the copy
answers what it answers from raw ``usage_events FINAL``, to the last digit — a re-sent event (``FINAL``), events on
the window's edges, a narrower range inside it (the spend window's last minutes), and an event that arrives late
inside the window (the next copy holds it). A range the copy does not hold is read from raw. A round of the cycle
makes one copy for retry storms and spend anomalies and drops it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pyarrow as pa
import pytest

from spendstream.agents.app import store_usage
from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.detect import anomaly, raw_window, retry_storm
from spendstream.detect.raw_window import RAW
from spendstream.pricing import Pricer
from spendstream.sinks.writer import SinkWriter

NOW = datetime(2021, 12, 14, 15, 30, tzinfo=timezone.utc)  # (this file's months: 2021-12 and 2022-02)
ROUND_AT = datetime(2022, 2, 9, 11, 20, tzinfo=timezone.utc)
WINDOW = timedelta(minutes=10)


def _write(store, events: list[dict]) -> None:
    asyncio.run(store_usage(SinkWriter(store), process(
        [SourceRecord("usage", 0, 0, orjson.dumps(events))], Pricer())))


def _events(tag: str, now: datetime) -> list[dict]:
    """Two features, three customers, two models; failures of every kind; repeated request shapes; attempts."""
    statuses = [("ok", None), ("error", 503), ("rate_limited", 429), ("timeout", None), ("invalid_output", None),
                ("ok", 200)]
    events = []
    for k in range(90):
        status, http = statuses[k % len(statuses)]
        events.append({
            "event_id": f"{tag}-{k}", "ts": (now - timedelta(seconds=7 * k + 1)).isoformat(),
            "provider": ("openai", "anthropic")[k % 2], "model": ("gpt-4o", "gpt-4o-mini")[k % 3 == 0],
            "input_tokens": 1000 if k % 4 else 2000, "output_tokens": 10 + k, "attempt": 1 + (k % 5 == 4),
            "request_id": f"{tag}-r{k // 2}", "status": status, **({"http_status": http} if http else {}),
            "team": f"{tag}-t{k % 2}", "feature": f"{tag}-f{k % 2}", "customer": f"{tag}-c{k % 3}",
            "prefix_fingerprint": f"{tag}-p{k % 4}" if k % 6 else None})
    # on the window's edges: its first millisecond is in, the one before it out
    for name, at in (("edge-in", now - WINDOW), ("edge-out", now - WINDOW - timedelta(milliseconds=1)),
                     ("edge-end", now)):
        events.append({**events[0], "event_id": f"{tag}-{name}", "ts": at.isoformat(), "request_id": f"{tag}-{name}"})
    return events


def _answers(store, now: datetime, raw: raw_window.RawWindow | None, tag: str) -> list[object]:
    """What every statement over the fast window says, reading ``raw`` (None: raw ``FINAL``); each float to 12
    significant digits: the engine sums floats (a shape's repeated dollars, a minute's ratio) over its threads in
    no fixed order, so the same rows can differ in a double's last bits from one read to the next, raw or copy
    (seen: 0.07702 against 0.07701999999999999)."""
    return _settled([*_statements(store, now, raw, tag)])


def _settled(value: object) -> object:
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _settled(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_settled(v) for v in value)
    return value


def _statements(store, now: datetime, raw: raw_window.RawWindow | None, tag: str) -> list[object]:
    start, since = now - WINDOW, now - timedelta(minutes=5)
    ours = [f"feature={tag}-f0", f"customer={tag}-c1", f"team={tag}-t0", f"feature={tag}-f1,customer={tag}-c2"]
    fast = retry_storm.fast_rows(store, start=start, end=now, raw=raw)
    spend = anomaly.spend_window(store, start=start, end=now, since=since, raw=raw)
    return [
        _ours(fast, tag).sort_by([("subject", "ascending"), ("provider", "ascending")]).to_pylist(),
        {s: v for s, v in retry_storm.repeated_shapes(store, start=start, end=now, raw=raw).items() if tag in s},
        retry_storm.pair_loops(store, start=start, end=now, slow=timedelta(hours=2), raw=raw,
                               features=[f"feature={tag}-f0"], customers=[f"customer={tag}-c1"])[0],
        _ours(spend, tag).sort_by("subject").to_pylist(),
        anomaly.spend_window(store, start=since, end=now, raw=raw).num_rows,  # a narrower range, from the copy
        anomaly.recent_requests(store, ours, start=start, end=now, since=since, raw=raw),
        anomaly.teams_of(store, [f"feature={tag}-f0", f"feature={tag}-f1"], start=start, end=now, raw=raw),
    ]


def _ours(table: pa.Table, tag: str) -> pa.Table:
    import pyarrow.compute as pc
    return table.filter(pc.match_substring(table["subject"], tag))


@pytest.mark.integration
def test_every_statement_over_the_copy_answers_what_raw_answers(embedded_store) -> None:
    tag = f"rw-{uuid.uuid4().hex[:8]}"
    events = _events(tag, NOW)
    _write(embedded_store, events)
    _write(embedded_store, [events[3]])  # a re-sent event: FINAL keeps one
    copy = raw_window.read(embedded_store, start=NOW - WINDOW, end=NOW)
    assert copy is not None and copy.table.startswith(f"{raw_window.DATABASE}.")
    try:
        from_raw, from_copy = _answers(embedded_store, NOW, None, tag), _answers(embedded_store, NOW, copy, tag)
        assert from_copy == from_raw
        fast, shapes, pairs, spend, narrower, requests, teams = from_raw
        assert len(fast) > 10 and shapes and pairs and len(spend) > 10 and narrower and len(requests) == 4 and teams
        assert {r["subject"]: r["attempts"] for r in spend}[f"feature={tag}-f0"] == 44  # 43 in, the edge in, once
        # a range the copy does not hold is read from raw; one it holds from the copy
        assert raw_window.source(copy, start=NOW - WINDOW - timedelta(seconds=1), end=NOW) == RAW
        assert raw_window.source(copy, start=NOW - WINDOW, end=NOW + timedelta(seconds=1)) == RAW
        assert raw_window.source(copy, start=NOW - timedelta(minutes=5), end=NOW) == copy.table
        assert raw_window.source(None, start=NOW - WINDOW, end=NOW) == RAW

        # an event arriving late inside the window: this round's copy is its snapshot, the next round's holds it
        _write(embedded_store, [{**events[1], "event_id": f"{tag}-late", "ts": (NOW - timedelta(minutes=9)).isoformat(),
                                 "request_id": f"{tag}-late", "attempt": 7, "status": "error", "http_status": 500}])
        later = raw_window.read(embedded_store, start=NOW - WINDOW, end=NOW)
        try:
            assert _answers(embedded_store, NOW, later, tag) == _answers(embedded_store, NOW, None, tag) != from_raw
            spend = {r["subject"]: r["attempts"] for r in _answers(embedded_store, NOW, later, tag)[3]}
            assert spend[f"feature={tag}-f1"] == 44  # 43 + the late one
            assert _answers(embedded_store, NOW, copy, tag) == from_raw
        finally:
            raw_window.drop(embedded_store, later)
    finally:
        raw_window.drop(embedded_store, copy)
    assert not _tables(embedded_store, {copy.table, later.table})


def _tables(store, names: set[str]) -> list[str]:
    rows = store.query("SELECT concat(database, '.', name) FROM system.tables WHERE database = {d:String}",
                       {"d": raw_window.DATABASE}).rows
    return [str(name) for (name,) in rows if name in names]


@pytest.mark.integration
def test_a_round_copies_the_raw_window_once_for_storms_and_spend_and_drops_it(embedded_store, monkeypatch) -> None:
    from spendstream.alerting import cycle

    tag = f"rwc-{uuid.uuid4().hex[:8]}"
    _write(embedded_store, _events(tag, ROUND_AT))
    copies: list[raw_window.RawWindow | None] = []
    read = raw_window.read

    def counted(querier, *, start, end):
        copies.append(read(querier, start=start, end=end))
        return copies[-1]

    monkeypatch.setattr(raw_window, "read", counted)
    given: dict[str, object] = {}
    for name in ("detect_retry_storms", "detect_spend_anomalies"):
        detect = getattr(cycle, name)

        def seen(store, now, *, _name=name, _detect=detect, **kwargs):
            given[_name] = kwargs.get("raw")
            return _detect(store, now, **kwargs)

        monkeypatch.setattr(cycle, name, seen)
    report = cycle.AlertCycle(embedded_store, cycle.AlertingConfig(), pass_deadline_s=10, clock=lambda: ROUND_AT).run()
    assert report.detector_errors == {}
    assert len(copies) == 1 and copies[0] is not None
    assert (copies[0].start, copies[0].end) == (ROUND_AT - cycle.FAST_WINDOW, ROUND_AT)
    assert given == {"detect_retry_storms": copies[0], "detect_spend_anomalies": copies[0]}
    assert not _tables(embedded_store, {copies[0].table})  # dropped at the round's end


def test_a_server_store_reads_raw_no_copy_is_made() -> None:
    asked: list[str] = []

    class Server:  # what a statement reaching a ClickHouse server sees: any replica behind one address
        def query_text(self, sql: str, params: dict | None = None, fmt: str = "PrettyCompact") -> str:
            asked.append(sql)
            return ""

    copy = raw_window.read(Server(), start=NOW - WINDOW, end=NOW)
    assert copy is None and asked == []
    assert raw_window.source(copy, start=NOW - WINDOW, end=NOW) == RAW


# main's fast window (8d35be5): the providers' totals as a window function over the subjects' minutes
_WINDOWED = """
    SELECT subject, provider, toFloat64(sum(n)) AS attempts, toFloat64(sum(f)) AS failed,
           toFloat64(max(longest)) AS max_attempt, sum(rl) AS rate_limited, sum(se) AS server_errors,
           sum(tm) AS timeouts, sum(io) AS invalid_outputs, toFloat64(sum(ln)) AS latest_attempts,
           toFloat64(sum(lf)) AS latest_failed,
           sum(n * if(all_n > n, greatest(all_f - f, 0) / (all_n - n), 0)) / attempts AS others
    FROM (SELECT *, sumIf(n, counted) OVER (PARTITION BY provider, minute) AS all_n,
                 sumIf(f, counted) OVER (PARTITION BY provider, minute) AS all_f
          FROM (SELECT subject, ifNull(provider, '') AS provider, toStartOfMinute(ts) AS minute,
                       count() AS n, countIf(status != 'ok') AS f, max(attempt) AS longest,
                       countIf(ts >= {l:DateTime64(3, 'UTC')}) AS ln,
                       countIf(ts >= {l:DateTime64(3, 'UTC')} AND status != 'ok') AS lf,
                       countIf(status = 'rate_limited' OR http_status = 429) AS rl,
                       countIf(http_status >= 500) AS se, countIf(status = 'timeout') AS tm,
                       countIf(status = 'invalid_output') AS io,
                       startsWith(subject, 'feature=') AND NOT position(subject, {mark:String}) AS counted
                FROM (SELECT SUBJECTS AS subject, provider, status, http_status, attempt, ts
                      FROM usage_events FINAL
                      WHERE ts >= {a:DateTime64(3, 'UTC')} AND ts < {b:DateTime64(3, 'UTC')})
                WHERE NOT endsWith(subject, '=') GROUP BY subject, provider, minute))
    GROUP BY subject, provider
    SETTINGS output_format_arrow_string_as_string = 1"""


@pytest.mark.integration
def test_the_fast_windows_provider_totals_by_a_join_equal_the_window_functions(embedded_store) -> None:
    """Features the totals must leave out as ``judge`` does: one named like a pair, one ending in '=', none."""
    from spendstream.detect import baseline
    from spendstream.sinks.store import sql_time

    tag = f"rwj-{uuid.uuid4().hex[:8]}"
    at = NOW + timedelta(hours=2)
    events = _events(tag, at)
    for k, feature in enumerate([f"{tag}-x,customer=y", f"{tag}-ends=", None] * 8):
        events.append({**events[k], "event_id": f"{tag}-odd{k}", "feature": feature,
                       "status": ("error", "ok")[k % 2], "ts": (at - timedelta(seconds=41 * k + 3)).isoformat()})
    _write(embedded_store, events)
    start, latest = at - WINDOW, at - timedelta(minutes=5)  # and the newest minutes a storm is judged on
    reference = embedded_store.query_arrow(_WINDOWED.replace("SUBJECTS", retry_storm._FAST_SUBJECTS), {
        "a": sql_time(start), "b": sql_time(at), "l": sql_time(latest), "mark": baseline.PAIR_MARK})
    copy = raw_window.read(embedded_store, start=start, end=at)
    try:
        for raw in (None, copy):
            joined = retry_storm.fast_rows(embedded_store, start=start, end=at, raw=raw, latest=latest)
            ours, theirs = (_ours(t, tag).sort_by([("subject", "ascending"), ("provider", "ascending")]).to_pylist()
                            for t in (joined, reference))
            assert len(ours) >= 15 and any(r["subject"] == f"feature={tag}-x,customer=y" for r in ours)
            assert [{k: v for k, v in r.items() if k != "others"} for r in ours] == \
                [{k: v for k, v in r.items() if k != "others"} for r in theirs]
            # the same terms, summed in another order: equal to the last bits of a double
            assert all(abs(r["others"] - s["others"]) <= 1e-12 * max(abs(s["others"]), 1e-300)
                       for r, s in zip(ours, theirs, strict=True))
            assert any(r["others"] > 0 for r in ours)
    finally:
        raw_window.drop(embedded_store, copy)
