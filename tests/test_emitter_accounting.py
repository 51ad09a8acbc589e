"""Every event given to the emitter ends as sent or as a counted drop: emit() calls == sent + sum(dropped_*)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest

from spendstream.emitter import DROP_REASONS, Emitter
from spendstream.emitter.batch import Batch
from spendstream.localbroker import free_port
from spendstream.schemas import UsageEvent
from tests.conftest import consume_all, events_in

NOW = datetime.now(timezone.utc).isoformat()


def _event(n: int, **fields: Any) -> UsageEvent:
    return UsageEvent(event_id=f"e{n}", provider="openai", model="gpt-4o", input_tokens=n, team="t", **fields)


def _unencodable_block_event() -> UsageEvent:
    """A UsageEvent that skipped validation and holds a lone surrogate: no JSON encoder takes it."""
    return UsageEvent.model_construct(event_id="bad-\ud800", provider="openai", model="gpt-4o")


def _dropped(stats: dict[str, int]) -> int:
    return sum(stats[f"dropped_{reason}"] for reason in DROP_REASONS)


def _dead_broker() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens here


# -- one bad event costs that event ------------------------------------------


def test_a_block_loses_only_the_events_it_cannot_encode() -> None:
    batch = Batch()
    events = [_event(n) for n in range(10)]
    events[3] = _unencodable_block_event()
    events[7] = UsageEvent.model_construct(event_id="odd", provider="openai", model="gpt-4o", team=object())
    for n, event in enumerate(events):
        batch.add_to_block(event, ("svc", "minute", n))
    sealed = batch.seal(max_bytes=512 * 1024)
    assert (sealed.unencodable, sealed.oversize) == (2, 0)
    assert sealed.first_error is not None
    kept = [key for record in sealed.records for key in record.keys]
    assert [key[2] for key in kept] == [0, 1, 2, 4, 5, 6, 8, 9]  # the rest, in order
    ids = [e["event_id"] for record in sealed.records for e in events_in(record.value)]
    assert ids == ["e0", "e1", "e2", "e4", "e5", "e6", "e8", "e9"]  # each record carries exactly its keys' events


def test_a_block_event_too_big_for_a_record_alone_is_counted_as_oversize() -> None:
    batch = Batch()
    big = _event(99, tags={f"k{k}": "v" * 250 for k in range(32)})  # ~8.5 kB encoded
    for event in (_event(0), big, _event(2)):
        batch.add_to_block(event, None)
    sealed = batch.seal(max_bytes=4096)
    assert (sealed.unencodable, sealed.oversize) == (0, 1)
    assert all(len(record.value) <= 4096 for record in sealed.records)
    assert sorted(e["event_id"] for r in sealed.records for e in events_in(r.value)) == ["e0", "e2"]


@pytest.mark.integration
def test_a_lone_surrogate_in_an_event_id_costs_that_event_and_sending_goes_on(broker: str, topic: str) -> None:
    with Emitter(bootstrap_servers=broker, topic=topic, register_atexit=False) as emitter:
        assert emitter.emit(_event(1))
        assert emitter.emit({"event_id": "bad-\ud800", "ts": NOW, "provider": "openai", "model": "gpt-4o"})
        assert emitter.emit({"event_id": "d1", "ts": NOW, "provider": "openai", "model": "gpt-4o"})
        assert emitter.flush(20)
        assert emitter.emit(_event(2))  # the sender is alive: later events are sent too
        assert emitter.flush(20)
        stats = emitter.stats()
    assert stats["dropped_unencodable"] == 1 and stats["sent_events"] == 3
    values = consume_all(broker, topic, expect=3, idle_s=0.5)
    assert sorted(e["event_id"] for v in values for e in events_in(v)) == ["d1", "e1", "e2"]


@pytest.mark.integration
def test_debug_mode_raises_the_first_failure_from_flush_and_keeps_sending(broker: str, topic: str) -> None:
    with Emitter(bootstrap_servers=broker, topic=topic, register_atexit=False, debug=True) as emitter:
        emitter.emit({"event_id": "odd", "value": object()})
        with pytest.raises(Exception, match="object"):
            emitter.flush(20)
        assert emitter.emit(_event(1)) and emitter.flush(20)  # raised once; the thread is alive
        assert emitter.stats()["sent_events"] == 1 and emitter.stats()["dropped_unencodable"] == 1


# -- the identity, in several scenarios ---------------------------------------


@dataclass
class Scenario:
    broker_up: bool
    events: list[Any]
    settings: dict[str, Any] = field(default_factory=dict)
    pause_every: int = 0  # sleep briefly every N emits, so the sender takes events while its send waits
    expect: dict[str, int] = field(default_factory=dict)  # counters that must be exactly this
    check: Callable[[dict[str, int], dict[str, int]], None] | None = None  # (stats while emitting, final)


def _bytes_bounded(during: dict[str, int], final: dict[str, int]) -> None:
    assert final["dropped_queue_full"] > 0 and final["sent_events"] == 0
    assert final["enqueued"] <= 2 * (256 * 1024) // 5_000  # most were refused by emit() itself (it returned False)
    assert during["buffered_bytes"] <= 256 * 1024  # rows are counted before they are kept: a hard bound
    assert during["buffered_events"] * 5_000 <= 256 * 1024 + 64 * 1024  # + events not yet taken from the queue


SCENARIOS = {
    "normal": Scenario(True, [_event(n) for n in range(500)] + [{"event_id": f"d{n}", "ts": NOW} for n in range(50)],
                       expect={"sent_events": 550}),
    "bad events": Scenario(True, [_event(0), {"event_id": "bad-\ud800", "ts": NOW}, _event(1),
                                  _unencodable_block_event(), {"event_id": "odd", "value": object()}, _event(2)],
                           expect={"sent_events": 3, "dropped_unencodable": 3}),
    "oversize": Scenario(True, [_event(0), {"event_id": "big", "blob": "x" * 5_000},
                                _event(1, tags={f"k{k}": "v" * 250 for k in range(32)}), _event(2)],
                         settings={"max_batch_bytes": 4_096}, expect={"sent_events": 2, "dropped_oversize": 2}),
    "broker down at close": Scenario(False, [_event(n) for n in range(3_000)], settings={"max_batch_events": 500},
                                     pause_every=500, expect={"sent_events": 0, "dropped_shutdown": 3_000}),
    "buffer full by bytes": Scenario(False, [{"event_id": f"b{n}", "blob": "x" * 5_000} for n in range(2_000)],
                                     settings={"max_buffer_bytes": 256 * 1024, "max_batch_bytes": 64 * 1024},
                                     pause_every=50, check=_bytes_bounded),
}


@pytest.mark.integration
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_emitted_event_ends_sent_or_counted(name: str, broker: str, topic: str) -> None:
    scenario = SCENARIOS[name]
    bootstrap = broker if scenario.broker_up else _dead_broker()
    emitter = Emitter(bootstrap_servers=bootstrap, topic=topic, delivery_timeout_s=60, register_atexit=False,
                      **scenario.settings)
    accepted = 0
    for n, event in enumerate(scenario.events, 1):
        accepted += emitter.emit(event)
        if scenario.pause_every and n % scenario.pause_every == 0:
            time.sleep(0.1)
    during = emitter.stats()
    started = time.monotonic()
    emitter.close(timeout_s=1.0 if not scenario.broker_up else 20.0)
    took_s = time.monotonic() - started
    stats = emitter.stats()
    assert stats["sent_events"] + _dropped(stats) == len(scenario.events), stats
    assert stats["enqueued"] == accepted
    assert stats["buffered_events"] == 0 and stats["buffered_bytes"] == 0
    for counter, value in scenario.expect.items():
        assert stats[counter] == value, (counter, stats)
    if scenario.check:
        scenario.check(during, stats)
    if scenario.broker_up:  # "sent" means Kafka has it
        values = consume_all(broker, topic, expect=1, idle_s=1.0)
        assert sum(len(events_in(v)) for v in values) == stats["sent_events"]
    else:  # with the broker down, close() keeps its deadline (plus the moment counting takes)
        assert took_s < 1.0 + 1.0, took_s
    assert emitter.emit(_event(0)) is False  # after close: refused and counted
    assert emitter.stats()["dropped_shutdown"] == stats["dropped_shutdown"] + 1


def test_counts_stay_exact_with_many_host_threads_emitting_at_once() -> None:
    emitter = Emitter(bootstrap_servers=_dead_broker(), topic="nowhere", max_queue_events=30_000,
                      register_atexit=False)
    accepted = [0] * 4

    def host(slot: int) -> None:
        for n in range(20_000):
            accepted[slot] += emitter.emit({"event_id": f"{slot}-{n}"})

    threads = [threading.Thread(target=host, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert emitter.stats()["enqueued"] == sum(accepted)
    emitter.close(timeout_s=0.5)
    stats = emitter.stats()
    assert stats["enqueued"] == sum(accepted) and sum(accepted) <= 30_000 + 4  # each racing thread may pass by one
    assert stats["sent_events"] + _dropped(stats) == 80_000
