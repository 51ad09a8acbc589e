"""A real worker process (tansu + chdb) serves /metrics, /healthz and /readyz, and the numbers move as events flow."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from spendstream.batches import DEAD_LETTER_KINDS, SourceRecord
from spendstream.demo.worker_process import StoreHostProcess, WorkerProcess
from spendstream.kafka_admin import ensure_topics
from spendstream.localbroker import free_port
from spendstream.sinks.store import query_result
from tests.conftest import produce_raw, wait_for_count, worker_settings

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError:
        return 0, b""  # nothing listening (yet)


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of the worker's /metrics, parsed by prometheus-client's own parser: (name, labels) -> value."""
    status, body = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def until(check: Callable[[], object], *, timeout_s: float = 60.0, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)
    return result


def _lag(samples: dict, topic: str) -> float:
    return sum(v for (name, labels), v in samples.items()
               if name == "spendstream_consumer_lag_records" and ("topic", topic) in labels)


def scrape_until(port: int, check: Callable[[dict], bool], *, what: str) -> dict:
    """The first scrape for which ``check`` holds."""
    def scraped() -> dict | None:
        samples = scrape(port)
        return samples if check(samples) else None
    return until(scraped, what=what)  # type: ignore[return-value]


def _event(event_id: str, ts: datetime, **fields: object) -> dict:
    return {"event_id": event_id, "ts": ts.isoformat(), "provider": "openai", "model": "gpt-4o-mini",
            "input_tokens": 1_000, "output_tokens": 100, "team": "search", **fields}


def test_metrics_and_probes_of_a_real_worker_move_as_events_flow(broker, topic, tmp_path, http_server) -> None:
    hook_port, hits = http_server
    routes = tmp_path / "routes.yaml"
    routes.write_text(json.dumps({
        "destinations": [{"name": "hook", "kind": "webhook", "url": f"http://127.0.0.1:{hook_port}/in"},
                         {"name": "typo", "kind": "webhook", "url": f"htps://127.0.0.1:{hook_port}/in"}],
        "routes": [{"destination": "hook"}, {"destination": "typo"}]}))
    port = free_port()
    settings = worker_settings(tmp_path / "data", topic, ops_address=f"127.0.0.1:{port}")
    ensure_topics(broker, {topic: 2})
    worker = WorkerProcess(settings, bootstrap_servers=broker, log_path=tmp_path / "worker.log",
                           extra_env={"SPENDSTREAM_ALERT_ROUTES": str(routes), "SPENDSTREAM_DETECT_INTERVAL_S": "1"})
    worker.start()
    try:
        until(lambda: _get(f"http://127.0.0.1:{port}/healthz")[0] == 200, what="liveness")
        until(lambda: _get(f"http://127.0.0.1:{port}/readyz")[0] == 200, what="readiness")
        before = scrape(port)
        assert value(before, "spendstream_records_consumed_total", topic=topic) == 0
        assert value(before, "spendstream_partitions_assigned", topic=topic) == 2

        ts = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
        good = [_event(f"{topic}-{i}", ts) for i in range(5)]
        produce_raw(broker, topic, [
            orjson.dumps(good),                                                  # 5 events
            orjson.dumps([_event(f"{topic}-5", ts), {"event_id": f"{topic}-x"}]),  # 1 event, 1 missing its ts
            b"{not json",                                                        # a whole record dead-lettered
            b"[]",                                                               # no events at all
        ])
        querier = worker.query_client()
        sql = f"SELECT count() FROM usage_events FINAL WHERE startsWith(event_id, '{topic}')"
        assert wait_for_count(querier, sql, 6) == 6
        # then: a re-delivery of a stored event and a conflicting copy of another (same id and ts, other tokens)
        produce_raw(broker, topic, [orjson.dumps(good[0]), orjson.dumps({**good[1], "input_tokens": 9})])
        # the batch's write is timed when its conflict alert is stored too, a moment after the counters move
        after = scrape_until(port, lambda s: value(s, "spendstream_conflicts_total") == 1
                             and value(s, "spendstream_redelivered_total") == 1
                             and (value(s, "spendstream_batch_write_seconds_count", kind="usage") or 0) >= 2,
                             what="the conflict and the copy, their batch's write timed")

        assert value(after, "spendstream_records_consumed_total", topic=topic) == 6
        assert value(after, "spendstream_events_consumed_total", kind="usage") == 5 + 2 + 1 + 1 + 2
        assert value(after, "spendstream_events_stored_total", kind="usage") == 6
        for reason in ("missing_field", "not_json", "no_events"):
            assert value(after, "spendstream_dead_letters_total", kind="usage", reason=reason) == 1, reason
        assert value(after, "spendstream_store_retries_total") == 0
        assert value(after, "spendstream_commit_failures_total", topic=topic) == 0

        # commits follow the writes: every partition's lag drains to 0, and only held partitions are reported
        lags = until(lambda: (lag := {labels: v for (name, labels), v in scrape(port).items()
                                      if name == "spendstream_consumer_lag_records"
                                      and ("topic", topic) in labels}) and not any(lag.values()) and lag,
                     what="lag to drain")
        assert {dict(labels)["partition"] for labels in lags} == {"0", "1"}

        # the leader's timers: rollups caught up, detection passes timed, the conflict alert delivered per destination
        final = scrape_until(port, lambda s: (value(s, "spendstream_alert_deliveries_total", destination="hook",
                                                    outcome="delivered") or 0) >= 1
                             and (value(s, "spendstream_alert_deliveries_total", destination="typo",
                                        outcome="failed") or 0) >= 1
                             # the maintainer recomputes a minute once nothing marked it for a second
                             and (value(s, "spendstream_rollup_periods_recomputed_total") or 0) >= 1,
                             what="alert deliveries and a rollup recomputation")
        assert value(final, "spendstream_rollup_seconds_behind") is not None
        assert value(final, "spendstream_rollup_periods_recomputed_total") >= 1
        assert value(final, "spendstream_detection_pass_seconds_count") >= 1
        for destination, outcome in (("hook", "delivered"), ("typo", "failed")):
            stored = query_result(querier, "SELECT count() FROM alert_deliveries FINAL WHERE destination = {d:String} "
                                  "AND outcome = {o:String}", {"d": destination, "o": outcome}).scalar()
            counted = value(scrape(port), "spendstream_alert_deliveries_total", destination=destination,
                            outcome=outcome)
            assert counted == stored >= 1, (destination, outcome)
        assert hits, "the webhook was called"
    finally:
        assert worker.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]


def test_readiness_follows_the_store_and_its_retries_are_counted(broker, topic, tmp_path) -> None:
    host = StoreHostProcess(tmp_path / "data", log_path=tmp_path / "store.log")
    host.start()
    port = free_port()
    settings = worker_settings(tmp_path / "data", topic, store_url=host.url, ops_address=f"127.0.0.1:{port}")
    ensure_topics(broker, {topic: 2, settings.gpu_topic: 1})
    worker = WorkerProcess(settings, bootstrap_servers=broker, log_path=tmp_path / "worker.log")
    worker.start()
    ready = f"http://127.0.0.1:{port}/readyz"
    try:
        until(lambda: _get(ready)[0] == 200, what="readiness")
        host.stop()  # ClickHouse goes away: not ready, but alive (restarting would not help)
        status, body = until(lambda: (r := _get(ready))[0] == 503 and r, what="not ready")
        assert "store" in json.loads(body)["problems"][0]
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        produce_raw(broker, topic, [orjson.dumps(_event(f"{topic}-0", datetime.now(timezone.utc)))])
        # fetched, not stored, so not committed: a lag of exactly 1 while the write is retried
        # (the ledger topic's writes may be what is retried first: wait for the usage record too)
        scrape_until(port, lambda s: _lag(s, topic) == 1 and (value(s, "spendstream_store_retries_total") or 0) >= 1,
                     what="a retried write of the fetched record")
        assert value(scrape(port), "spendstream_events_stored_total", kind="usage") is None
        host.start()
        until(lambda: _get(ready)[0] == 200, what="ready again")
        until(lambda: value(scrape(port), "spendstream_events_stored_total", kind="usage") == 1, what="the event")
        until(lambda: _lag(scrape(port), topic) == 0, what="the commit after the write")
    finally:
        worker.stop()
        host.stop()


@pytest.mark.parametrize("value_", [b"", b"{not json", b"[]", b"7", b"[7]", b"[{}]", b'[{"event_id": "a"}]',
                                    b'[{"event_id": "a", "ts": "2001-01-01T00:00:00Z"}]',
                                    b'[{"event_id": "a", "ts": "2026-01-01T00:00:00Z", "input_tokens": -1}]',
                                    b'{"block": "v0", "event_id": [1]}', b'{"block": "spendstream.v1", "a": 1}'])
def test_every_dead_letter_the_stages_make_has_a_known_kind(value_: bytes) -> None:
    from spendstream.agents.stages import process
    from spendstream.pricing import Pricer

    batch = process([SourceRecord("t", 0, 0, value_)], Pricer())
    assert batch.dead_letters, value_
    kinds = {letter.kind for letter in batch.dead_letters}
    assert kinds <= {kind for kind, _ in DEAD_LETTER_KINDS}, [letter.reason for letter in batch.dead_letters]


def test_an_unknown_reason_is_other() -> None:
    from spendstream.batches import DeadLetter

    assert DeadLetter(SourceRecord("t", 0, 0, b""), -1, "something new", b"").kind == "other"


@pytest.mark.parametrize("address", ["9464", ":9464", "0.0.0.0", "0.0.0.0:0", "0.0.0.0:70000", "host:port"])
def test_an_ops_address_that_cannot_work_is_refused_saying_what_is_expected(address: str) -> None:
    from pydantic import ValidationError

    from spendstream.settings import Settings

    with pytest.raises(ValidationError, match="expected host:port"):
        Settings(ops_address=address)


def test_an_ops_address_is_a_host_and_a_port() -> None:
    from spendstream.settings import ops_address

    assert ops_address("0.0.0.0:9464") == ("0.0.0.0", 9464)
    assert ops_address("[::]:9464") == ("::", 9464)
