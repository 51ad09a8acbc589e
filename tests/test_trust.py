"""Nothing changes a billed number but a new event: poison records, conflicting copies, dead letters, replay.

Pure tests run the corpus of tests/adversarial.py through the stages; the
integration tests send it to a real broker and a worker process writing to chdb.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from spendstream.agents.app import store_usage
from spendstream.agents.stages import isolated, process
from spendstream.batches import BatchResult, SourceRecord
from spendstream.demo.worker_process import WorkerProcess
from spendstream.emitter import Emitter
from spendstream.pricing import Pricer
from spendstream.schemas import UsageEvent
from spendstream.sinks.conflicts import recheck, resolve
from spendstream.sinks.rows import dead_letter_table, usage_table
from spendstream.sinks.store import query_result
from spendstream.sinks.writer import SinkWriter
from tests.adversarial import corpus, event
from tests.conftest import wait_for_count

PRICER = Pricer()


# -- one bad record never costs its neighbours ---------------------------------------------

def test_the_corpus_is_wide_and_every_kind_ends_as_its_expected_outcome() -> None:
    kinds = corpus()
    assert len(kinds) >= 60 and len({name for name, *_ in kinds}) == len(kinds)
    neither = []
    for offset, (name, value, stores, why) in enumerate(kinds):
        batch = process([SourceRecord("usage", 0, offset, value)], PRICER)
        reasons = [d.reason for d in batch.dead_letters]
        assert batch.num_events == stores, (name, reasons)
        if why is None:
            assert not reasons, (name, reasons)
        else:
            assert reasons and all(why.lower() in r.lower() for r in reasons), (name, why, reasons)
            assert all(d.raw for d in batch.dead_letters if name != "empty value"), name  # the bytes are kept
        if batch.num_events == 0 and not reasons:
            neither.append(name)
    assert neither == []


def test_the_whole_corpus_in_one_batch_costs_no_neighbour() -> None:
    kinds = corpus()
    records = [SourceRecord("usage", 0, offset, value) for offset, (_, value, _, _) in enumerate(kinds)]
    batch = process(records, PRICER)
    assert batch.num_events == sum(stores for _, _, stores, _ in kinds)
    dead_offsets = {d.source.offset for d in batch.dead_letters}
    assert dead_offsets == {offset for offset, (_, _, _, why) in enumerate(kinds) if why is not None}
    stored_offsets = set(batch.events["source_offset"].to_pylist())
    assert stored_offsets == {offset for offset, (_, _, stores, _) in enumerate(kinds) if stores}


def test_an_unexpected_error_costs_only_the_record_that_raises() -> None:
    good = [SourceRecord("usage", 0, i, orjson.dumps(event())) for i in range(5)]
    bomb = SourceRecord("usage", 0, 99, orjson.dumps(event(team="bomb")))

    def buggy(records):
        if any(r.offset == 99 for r in records):
            raise ZeroDivisionError("a bug")
        return process(records, PRICER)

    results, errors = isolated(buggy, [*good[:2], bomb, *good[2:]], lambda dead: BatchResult(dead_letters=dead))
    assert sum(r.num_events for r in results) == 5
    dead = [d for r in results for d in r.dead_letters]
    assert [(d.source.offset, d.raw) for d in dead] == [(99, bomb.value)]
    assert "internal error" in dead[0].reason and "ZeroDivisionError: a bug" in dead[0].reason
    assert len(errors) == 2  # the batch, then the record alone


def test_records_good_alone_but_failing_together_are_written_one_by_one() -> None:
    records = [SourceRecord("usage", 0, i, orjson.dumps(event())) for i in range(3)]

    def fails_in_company(part):
        if len(part) > 1:
            raise RuntimeError("only together")
        return process(part, PRICER)

    results, errors = isolated(fails_in_company, records, lambda dead: BatchResult(dead_letters=dead))
    assert [r.num_events for r in results] == [1, 1, 1] and not any(r.dead_letters for r in results)
    assert len(errors) == 2


# -- conflicting copies: the first copy stored stands --------------------------------------

def _write(store, records: list[SourceRecord], **writer) -> None:
    asyncio.run(store_usage(SinkWriter(store, **writer), process(records, PRICER)))  # as the worker does


def _rows(store, event_id: str) -> list[list]:
    return store.query("SELECT output_tokens, total_cost, source_partition, source_offset FROM usage_events FINAL "
                       "WHERE event_id = {e:String}", {"e": event_id}).rows


def test_a_conflicting_resend_never_replaces_the_billed_row_and_is_recorded_and_alerted(embedded_store) -> None:
    first = event(output_tokens=10)
    _write(embedded_store, [SourceRecord("usage", 0, 1, orjson.dumps(first))])
    billed = _rows(embedded_store, first["event_id"])
    forged = {**first, "output_tokens": 100_000_000}
    _write(embedded_store, [SourceRecord("usage", 1, 7, orjson.dumps(forged))])
    _write(embedded_store, [SourceRecord("usage", 0, 1, orjson.dumps(first))])  # a crash re-delivery: idempotent
    assert _rows(embedded_store, first["event_id"]) == billed and billed[0][0] == 10
    conflicts = [tuple(row) for row in embedded_store.query(
        "SELECT differs, source_partition, source_offset, stored_source_partition, stored_source_offset, "
        "copy_total_cost > stored_total_cost, JSONExtractUInt(copy, 'output_tokens') FROM event_conflicts FINAL "
        "WHERE event_id = {e:String}", {"e": first["event_id"]}).rows]
    assert conflicts == [(["output_tokens"], 1, 7, 0, 1, 1, 100_000_000)]
    alerts = embedded_store.query("SELECT severity FROM alerts FINAL WHERE kind = 'event_conflict'").rows
    assert alerts and alerts[0][0] == "error"


def test_a_copy_with_another_ts_within_the_horizon_is_a_conflict_not_a_second_event(embedded_store) -> None:
    first = event(ts="2026-11-30T10:00:00Z")
    _write(embedded_store, [SourceRecord("usage", 0, 1, orjson.dumps(first))], dedup_horizon_s=3600)
    _write(embedded_store, [SourceRecord("usage", 0, 2, orjson.dumps({**first, "ts": "2026-11-30T10:40:00Z"}))],
           dedup_horizon_s=3600)
    assert len(_rows(embedded_store, first["event_id"])) == 1
    differs = embedded_store.query("SELECT differs FROM event_conflicts FINAL WHERE event_id = {e:String}",
                                   {"e": first["event_id"]}).scalar()
    assert differs == ["ts"]


@contextmanager
def _no_merges(store):
    # A background merge may collapse the copy that does not stand before a writer looks again
    # (conflicts.py: the gap that remains); these tests are about what a writer sees before it.
    store.command("SYSTEM STOP MERGES usage_events")
    try:
        yield
    finally:
        store.command("SYSTEM START MERGES usage_events")


def _race(store, *copies: tuple[int, dict], recheck_after: bool = True) -> None:
    """Writers that each check their copy before any of them inserts (two workers, one instant),
    then insert, then (unless killed first) look again, as SinkWriter does."""
    resolutions = []
    for n, (partition, copy) in enumerate(copies):
        rows = usage_table(process([SourceRecord("usage", partition, 1, orjson.dumps(copy))], PRICER),
                           now=datetime(2026, 11, 30, 12, 0, n, tzinfo=timezone.utc))
        resolutions.append(resolve(store, rows, horizon_s=0))
    assert all(r.rows.num_rows == 1 and r.conflicts.num_rows == 0 for r in resolutions)  # neither saw the other
    for resolution in resolutions:
        store.insert_arrow("usage_events", resolution.rows)
    if recheck_after:
        for resolution in resolutions:
            found = recheck(store, resolution)
            if found.num_rows:
                store.insert_arrow("event_conflicts", found)


def _conflicts(store, event_id: str) -> list[tuple]:
    return [tuple(row) for row in store.query(
        "SELECT differs, source_partition, stored_source_partition, JSONExtractUInt(copy, 'output_tokens') "
        "FROM event_conflicts FINAL WHERE event_id = {e:String}", {"e": event_id}).rows]


def test_conflicting_copies_stored_by_two_workers_at_once_are_recorded_once(embedded_store) -> None:
    first = event(output_tokens=10)
    with _no_merges(embedded_store):
        _race(embedded_store, (0, first), (1, {**first, "output_tokens": 5_000}))
    # the copy ingested first stands (precedence); the other is recorded once, though both writers found it
    assert [row[0] for row in _rows(embedded_store, first["event_id"])] == [10]
    assert _conflicts(embedded_store, first["event_id"]) == [(["output_tokens"], 1, 0, 5_000)]


def test_a_worker_killed_before_its_recheck_leaves_the_conflict_to_the_re_delivery(embedded_store) -> None:
    first = event(output_tokens=10)
    forged = {**first, "output_tokens": 5_000}
    with _no_merges(embedded_store):
        _race(embedded_store, (0, first), (1, forged), recheck_after=False)
        assert _conflicts(embedded_store, first["event_id"]) == []
        _write(embedded_store, [SourceRecord("usage", 0, 1, orjson.dumps(first))])  # its batch comes again
    assert _conflicts(embedded_store, first["event_id"]) == [(["output_tokens"], 1, 0, 5_000)]
    _write(embedded_store, [SourceRecord("usage", 1, 1, orjson.dumps(forged))])  # and the other's: the same record
    assert _conflicts(embedded_store, first["event_id"]) == [(["output_tokens"], 1, 0, 5_000)]
    assert [row[0] for row in _rows(embedded_store, first["event_id"])] == [10]


def test_by_default_an_id_re_used_with_another_ts_is_another_event(embedded_store) -> None:
    first = event(ts="2026-11-30T10:00:00Z")
    _write(embedded_store, [SourceRecord("usage", 0, 1, orjson.dumps(first))])
    _write(embedded_store, [SourceRecord("usage", 0, 2, orjson.dumps({**first, "ts": "2026-11-30T10:40:00Z"}))])
    assert len(_rows(embedded_store, first["event_id"])) == 2  # documented: widen the horizon to catch it


def test_within_one_batch_the_first_copy_in_source_order_stands(embedded_store) -> None:
    a = event(output_tokens=1)
    records = [SourceRecord("usage", 0, 5, orjson.dumps(a)), SourceRecord("usage", 1, 3, orjson.dumps(a)),
               SourceRecord("usage", 1, 4, orjson.dumps({**a, "output_tokens": 2}))]
    _write(embedded_store, records)
    assert [r[0] for r in _rows(embedded_store, a["event_id"])] == [1]
    copies = embedded_store.query("SELECT source_partition, source_offset FROM event_conflicts FINAL "
                                  "WHERE event_id = {e:String}", {"e": a["event_id"]}).rows
    assert copies == [[1, 4]]  # the identical copy at (1, 3) is a re-delivery, not a conflict


def test_the_table_itself_keeps_the_first_copy_stored(embedded_store) -> None:
    """Two conflicting copies stored without the check (two workers at the same instant): the first stands."""
    from spendstream.sinks.rows import usage_table

    a = event(output_tokens=1)
    now = datetime.now(timezone.utc)
    for tokens, at in ((1, now), (2, now + timedelta(seconds=1))):
        batch = process([SourceRecord("usage", 0, tokens, orjson.dumps({**a, "output_tokens": tokens}))], PRICER)
        embedded_store.insert_arrow("usage_events", usage_table(batch, now=at))
    assert [r[0] for r in _rows(embedded_store, a["event_id"])] == [1]


# -- dead letters are never overwritten ---------------------------------------------------

def test_a_different_record_at_the_same_coordinates_never_takes_a_dead_letters_place(embedded_store) -> None:
    topic = f"restarted-{uuid.uuid4().hex[:8]}"
    for value in (b"{first broker run", b"{second broker run", b"{second broker run"):  # the last: a re-delivery
        dead = process([SourceRecord(topic, 0, 0, value)], PRICER).dead_letters
        embedded_store.insert_arrow("dead_letters", dead_letter_table(dead))
    raws = embedded_store.query("SELECT raw FROM dead_letters FINAL WHERE source_topic = {t:String} ORDER BY raw",
                                {"t": topic}).rows
    assert raws == [["{first broker run"], ["{second broker run"]]


# -- through the real broker and a worker process ------------------------------------------

def _produce(bootstrap: str, topic: str, values: list[bytes], partition: int | None = None) -> None:
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=16 * 1024 * 1024)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(topic, value, partition=partition)
        finally:
            await producer.stop()

    asyncio.run(run())


@pytest.mark.integration
def test_a_thousand_events_beside_every_poison_record_are_all_stored(broker, topic, worker) -> None:
    querier = worker.query_client()
    good = [UsageEvent(event_id=f"good-{n}", provider="openai", model="gpt-4o-mini", input_tokens=100 + n)
            for n in range(1000)]
    kinds = corpus()
    with Emitter(bootstrap_servers=broker, topic=topic, register_atexit=False) as emitter:
        for e in good[:500]:
            emitter.emit(e)
        assert emitter.flush(30)
    _produce(broker, topic, [value for _, value, _, _ in kinds])
    with Emitter(bootstrap_servers=broker, topic=topic, register_atexit=False) as emitter:
        for e in good[500:]:
            emitter.emit(e)
        assert emitter.flush(30)
    expected_events = 1000 + sum(stores for _, _, stores, _ in kinds)
    expected_dead = sum(len(process([SourceRecord(topic, 0, 0, v)], PRICER).dead_letters) for _, v, _, _ in kinds)
    stored = wait_for_count(querier, "SELECT count() FROM usage_events FINAL", expected_events)
    dead = wait_for_count(querier, "SELECT count() FROM dead_letters FINAL", expected_dead)
    assert (stored, dead) == (expected_events, expected_dead)
    good_stored = query_result(querier, "SELECT count() FROM usage_events FINAL WHERE startsWith(event_id, 'good-')")
    assert good_stored.scalar() == 1000
    internal = query_result(querier, "SELECT count() FROM dead_letters WHERE reason LIKE 'internal error%'").scalar()
    assert internal == 0  # every refusal names its real cause


@pytest.mark.integration
def test_a_conflicting_copy_on_another_partition_is_recorded_and_not_applied(broker, topic, worker) -> None:
    querier = worker.query_client()
    first = event(output_tokens=10)
    _produce(broker, topic, [orjson.dumps(first)], partition=0)
    wait_for_count(querier, f"SELECT count() FROM usage_events FINAL WHERE event_id = '{first['event_id']}'", 1)
    _produce(broker, topic, [orjson.dumps({**first, "output_tokens": 100_000_000})], partition=1)
    wait_for_count(querier, "SELECT count() FROM event_conflicts FINAL", 1)
    tokens = query_result(querier, f"SELECT output_tokens, source_partition FROM usage_events FINAL "
                                   f"WHERE event_id = '{first['event_id']}'").rows
    assert tokens == [[10, 0]]


def _cli_env(worker: WorkerProcess, broker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSTREAM_")}
    s = worker.settings
    env.update(SPENDSTREAM_DATA_DIR=str(s.data_dir), SPENDSTREAM_KAFKA_BOOTSTRAP=broker,
               SPENDSTREAM_USAGE_TOPIC=s.usage_topic, SPENDSTREAM_GPU_TOPIC=s.gpu_topic,
               SPENDSTREAM_LEDGER_TOPIC=s.ledger_topic)
    return env


@pytest.mark.integration
def test_dead_letters_replay_after_a_fix_idempotently_and_say_what_happened(broker, topic, worker) -> None:
    querier = worker.query_client()
    # A valid event that an earlier worker dead-lettered by a bug, and a record that is still bad.
    fixed = event(event_id=f"replayed-{uuid.uuid4().hex[:8]}")
    dead = [*process([SourceRecord(topic, 0, 41, b"{still not json")], PRICER).dead_letters]
    dead_rows = dead_letter_table(dead).to_pylist()
    bug = {**dead_rows[0], "source_offset": 40, "reason": "internal error while processing (please report): KeyError",
           "raw": orjson.dumps(fixed), "event_id": fixed["event_id"]}
    from spendstream.sinks.rows import raw_digest
    bug["raw_digest"] = raw_digest(bug["raw"])
    values = ", ".join(
        f"(now64(3), '{topic}', 0, {r['source_offset']}, -1, "
        f"{'NULL' if r['event_id'] is None else repr(r['event_id'])}, "
        f"'{r['reason']}', unhex('{r['raw'].hex()}'), {r['raw_digest']})" for r in (bug, dead_rows[0]))
    querier.query_text("INSERT INTO dead_letters (received_at, source_topic, source_partition, source_offset, "
                       f"item_index, event_id, reason, raw, raw_digest) VALUES {values}", fmt="CSV", write=True)
    env = _cli_env(worker, broker)

    dry = subprocess.run([sys.executable, "-m", "spendstream", "dead-letters", "replay", "--since", "1h", "--dry-run"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert "stores 1 event" in dry.stdout and "refused again: record is not valid JSON" in dry.stdout
    assert "2 dead letter(s) would be replayed: 1 store now, 1 still refused (dry run" in dry.stdout
    stored = f"SELECT count() FROM usage_events WHERE event_id = '{fixed['event_id']}'"
    assert query_result(querier, stored).scalar() == 0

    run = subprocess.run([sys.executable, "-m", "spendstream", "dead-letters", "replay", "--since", "1h",
                          "--wait", "60"], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    assert "sent: stored (1)" in run.stdout and "sent: dead-lettered again: record is not valid JSON" in run.stdout
    assert query_result(querier, f"SELECT count() FROM usage_events FINAL "
                                 f"WHERE event_id = '{fixed['event_id']}'").scalar() == 1

    again = subprocess.run([sys.executable, "-m", "spendstream", "dead-letters", "replay", "--since", "1h",
                            "--reason", "internal error", "--wait", "5"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "no dead letters received since" in again.stdout and \
        "with a reason containing 'internal error' that were not replayed before" in again.stdout, \
        again.stdout + again.stderr
    originals = query_result(querier, "SELECT count() FROM dead_letters FINAL WHERE source_offset IN (40, 41)").scalar()
    assert originals >= 2  # replaying keeps the dead letters it replays


def test_an_old_layout_upgrades_in_place_with_identical_totals(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-c", _UPGRADE, str(tmp_path / "data")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    before, after, key, again = result.stdout.splitlines()
    assert before == after and before.count("\t") == 3
    assert key == "ts, event_id" and again == "[]"


_UPGRADE = """import sys, orjson
import spendstream.sinks.migrations as m
from spendstream.batches import SourceRecord
from spendstream.agents.stages import process
from spendstream.pricing import Pricer
from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.rows import usage_table
s = EmbeddedStore(sys.argv[1])
every = m.MIGRATIONS
m.MIGRATIONS = tuple(x for x in every if x.version < 8)
m.migrate(s)
events = [{"event_id": f"u{i}", "ts": f"2026-11-{1 + i % 28:02d}T{i % 24:02d}:00:00Z", "provider": "openai",
           "model": "gpt-4o", "input_tokens": 1000 + i, "output_tokens": i, "team": f"t{i % 3}"} for i in range(300)]
again = [dict(e, ts="2026-11-29T00:00:00Z", output_tokens=5) for e in events[:20]]  # old engine: last one won
# the old layout has the columns of its time only: rows as an old worker would have written them
old = {r[0] for r in s.query("SELECT name FROM system.columns WHERE table = 'usage_events' "
                             "AND database = currentDatabase()").rows}
for part in (events, events[:50], again):
    rows = usage_table(process([SourceRecord("u", 0, 0, orjson.dumps(part))], Pricer()))
    s.insert_arrow("usage_events", rows.select([name for name in rows.column_names if name in old]))
totals = "SELECT count(), sum(total_cost), sum(output_tokens), groupArraySorted(5)(team) FROM usage_events FINAL"
print(s.query_text(totals, fmt="TSV"), end="")
m.MIGRATIONS = every
m.migrate(s)
print(s.query_text(totals, fmt="TSV"), end="")
print(s.query("SELECT sorting_key FROM system.tables "
              "WHERE name = 'usage_events' AND database = currentDatabase()").scalar())
print(m.migrate(s))
s.close()
"""
