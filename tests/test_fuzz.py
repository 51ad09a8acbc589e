"""A fuzzed corpus of malformed records: every one is dead-lettered with a reason, none stops the worker."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from spendstream.demo.worker_process import WorkerProcess
from spendstream.kafka_admin import ensure_topics
from spendstream.sinks.store import query_result
from tests.conftest import produce_raw, worker_settings

pytestmark = pytest.mark.integration


def _valid(n: int, prefix: str) -> dict:
    return {"event_id": f"{prefix}-ok-{n}", "ts": datetime.now(timezone.utc).isoformat(), "provider": "openai",
            "model": "gpt-4o-mini", "input_tokens": 100, "output_tokens": 10}


def corpus(prefix: str, seed: int = 11) -> tuple[list[bytes], int, int]:
    """(records, bad items expected in dead_letters, valid events expected in usage_events)."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    mutations = [
        lambda e: e | {"input_tokens": -5},
        lambda e: e | {"input_tokens": 10**12},
        lambda e: e | {"output_tokens": "12"},
        lambda e: e | {"input_tokens": 1.5},
        lambda e: e | {"input_tokens": True},
        lambda e: e | {"cached_input_tokens": 500},                       # cached > input
        lambda e: e | {"reasoning_tokens": 99},                           # reasoning > output
        lambda e: {k: v for k, v in e.items() if k != "provider"},
        lambda e: {k: v for k, v in e.items() if k != "event_id"},
        lambda e: {k: v for k, v in e.items() if k != "ts"},
        lambda e: e | {"ts": "yesterday"},
        lambda e: e | {"ts": "2026-01-01T00:00:00"},                      # no zone
        lambda e: e | {"ts": (now + timedelta(days=400)).isoformat()},    # future
        lambda e: e | {"ts": "1970-01-01T00:00:01Z"},                     # ancient
        lambda e: e | {"model": "m" * 300_000},                           # huge string
        lambda e: e | {"tags": {f"k{i}": "v" for i in range(100)}},       # too many tags
        lambda e: e | {"tags": {"k": "v" * 10_000}},
        lambda e: e | {"status": "exploded"},
        lambda e: e | {"http_status": 999},
        lambda e: e | {"latency_ms": -1},
        lambda e: e | {"schema_version": 99},
        lambda e: e | {"mode": "overnight"},
        lambda e: e | {"attempt": 0},
    ]
    records, bad, good = [], 0, 0
    for n, mutate in enumerate(mutations):
        event = mutate(_valid(n, prefix))
        event.setdefault("event_id", f"{prefix}-bad-{n}") if "event_id" in event else None
        mixed = [_valid(1000 + n, prefix), event]   # each bad item rides with a good one
        rng.shuffle(mixed)
        records.append(orjson.dumps(mixed))
        bad, good = bad + 1, good + 1
    whole = [b"{not json", b"\xff\xfe\x00binary", b"", b"null", b"42", b'"a string"', b"[1, 2, 3]",
             b"[[{}]]", b'{"a": ' * 600 + b"1" + b"}" * 600, b"1e999999", b"[" + b"{}," * 5 + b"{}]"]
    records += whole
    # items inside arrays count one by one; whole-record failures once; "[]" and "[{}…]" are per item
    bad += 1 + 1 + 1 + 1 + 1 + 1 + 3 + 1 + 1 + 1 + 6
    huge = orjson.dumps([_valid(5000, prefix) | {"service": "x" * 900_000}])  # an oversize record
    records.append(huge)
    bad += 1
    return records, bad, good


def test_every_malformed_record_is_dead_lettered_with_a_reason_and_the_worker_keeps_going(broker, topic,
                                                                                          tmp_path) -> None:
    settings = worker_settings(tmp_path / "data", topic)
    ensure_topics(broker, {topic: 2, settings.gpu_topic: 1})
    records, bad, good = corpus(topic)
    produce_raw(broker, topic, records)
    with WorkerProcess(settings, bootstrap_servers=broker, log_path=tmp_path / "worker.log") as worker:
        querier = worker.query_client()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            dead = int(query_result(querier, "SELECT count() FROM dead_letters FINAL").scalar())
            stored = int(query_result(querier, "SELECT count() FROM usage_events FINAL").scalar())
            if dead >= bad and stored >= good:
                break
            time.sleep(0.5)
        assert (dead, stored) == (bad, good)
        reasons = query_result(querier, "SELECT reason FROM dead_letters FINAL").rows
        assert all(r[0] and len(r[0]) > 10 for r in reasons)
        joined = " | ".join(r[0] for r in reasons)
        for expected in ("input_tokens", "greater than or equal to 0", "less than or equal to 100000000",
                         "must include cached", "missing required field(s) event_id", "in the future",
                         "before 2020-01-01", "not valid JSON", "empty record value", "expected an object",
                         "String should have at most 128 characters", "timezone"):
            assert expected in joined, expected
        # and after all that the worker still prices a good record
        produce_raw(broker, topic, [orjson.dumps([_valid(9999, topic)])])
        deadline = time.monotonic() + 30
        while int(query_result(querier, "SELECT count() FROM usage_events FINAL").scalar()) < good + 1:
            assert time.monotonic() < deadline, "the worker stopped processing after the corpus"
            time.sleep(0.3)
