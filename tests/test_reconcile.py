"""Reconciliation: the emitter's ledger against ClickHouse, per source and minute."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from spendstream.demo.worker_process import WorkerProcess
from spendstream.emitter import Emitter
from spendstream.emitter.ledger import Ledger, event_key
from spendstream.kafka_admin import ensure_topics
from spendstream.reconcile import reconcile
from spendstream.schemas import UsageEvent
from tests.conftest import worker_settings


def test_the_ledger_counts_each_event_once_per_source_and_minute() -> None:
    ledger = Ledger(interval_s=0)
    t = datetime(2026, 11, 1, 12, 0, 30, tzinfo=timezone.utc)
    a = UsageEvent(event_id="a", ts=t, provider="p", model="m", service="api")
    b = {"event_id": "b", "ts": "2026-11-01T13:00:10+01:00", "service": "api"}  # the same UTC minute
    ledger.delivered([event_key(a), event_key(b), event_key(a), event_key({"event_id": "c", "ts": "nonsense"})])
    (entry,) = ledger.report()
    assert (entry["service"], entry["minute"], entry["events"], entry["exact"]) == ("api", "2026-11-01T12:00:00Z", 2,
                                                                                   True)
    assert ledger.report() == []  # nothing changed since


@pytest.mark.integration
def test_reconcile_finds_nothing_missing_then_names_the_gap(broker, topic, tmp_path) -> None:
    settings = worker_settings(tmp_path / "data", topic, ledger_topic=f"{topic}.ledger")
    ensure_topics(broker, {topic: 2, settings.gpu_topic: 1, settings.ledger_topic: 1})
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=5)
    events = [UsageEvent(event_id=f"{topic}-{i}", ts=now + timedelta(seconds=20 * i), provider="openai",
                         model="gpt-4o-mini", input_tokens=100, output_tokens=5, service=f"svc-{i % 2}")
              for i in range(12)]
    with WorkerProcess(settings, bootstrap_servers=broker, log_path=tmp_path / "worker.log") as worker:
        with Emitter(bootstrap_servers=broker, topic=topic, ledger_topic=settings.ledger_topic,
                     register_atexit=False) as emitter:
            for event in events + events[:4]:  # four sent twice: still twelve events
                emitter.emit(event)
            emitter.emit({"event_id": f"{topic}-bad", "ts": (now + timedelta(seconds=5)).isoformat(),
                          "service": "svc-0", "provider": "openai", "model": "gpt-4o-mini", "input_tokens": "x"})
            assert emitter.flush(30)
        querier = worker.query_client()
        since, until = now - timedelta(minutes=1), now + timedelta(minutes=10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            intervals = reconcile(querier, since, until)
            if intervals and sum(i.emitted for i in intervals) == 13 and not any(i.gap for i in intervals):
                break
            time.sleep(0.5)
        assert sum(i.emitted for i in intervals) == 13 and sum(i.stored for i in intervals) == 12
        assert sum(i.dead_lettered for i in intervals) == 1 and not any(i.gap for i in intervals)
        assert {i.service for i in intervals} == {"svc-0", "svc-1"}

        # lose two events of svc-1 behind the pipeline's back: reconcile names the minute and the source
        lost = [e for e in events if e.service == "svc-1"][:2]
        worker.query_client().query_text(
            "ALTER TABLE usage_events DELETE WHERE event_id IN ({a:String}, {b:String}) "
            "SETTINGS mutations_sync = 1", {"a": lost[0].event_id, "b": lost[1].event_id}, fmt="CSV", write=True)
        gaps = [(i.service, i.minute, i.gap) for i in reconcile(querier, since, until) if i.gap]
        assert {service for service, _, _ in gaps} == {"svc-1"} and sum(gap for _, _, gap in gaps) == 2
        assert {minute for _, minute, _ in gaps} == {lost[0].ts.strftime("%Y-%m-%d %H:%M"),
                                                      lost[1].ts.strftime("%Y-%m-%d %H:%M")}
