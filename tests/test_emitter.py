"""The emitter against a real broker, and with no broker at all."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import orjson
import pytest

from spendstream.emitter import Emitter
from spendstream.localbroker import free_port
from spendstream.schemas import UsageEvent
from tests.conftest import consume_all, events_in


def _event(n: int) -> UsageEvent:
    return UsageEvent(event_id=f"e{n}", provider="openai", model="gpt-4o", input_tokens=n, team="t")


@pytest.mark.integration
def test_many_events_travel_in_one_record(broker: str, topic: str) -> None:
    with Emitter(bootstrap_servers=broker, topic=topic, max_batch_events=100, register_atexit=False) as emitter:
        for n in range(250):
            assert emitter.emit(_event(n))
        assert emitter.flush(20)
        stats = emitter.stats()
    values = consume_all(broker, topic, expect=3)
    events = [e for value in values for e in events_in(value)]
    # records may land on different partitions, so compare without order across records
    assert sorted(e["event_id"] for e in events) == sorted(f"e{n}" for n in range(250))
    assert sorted(len(events_in(v)) for v in values) == [50, 100, 100]
    assert stats["sent_events"] == 250 and stats["sent_records"] == 3
    # UsageEvents travel as blocks of columns; a column every event leaves at its default is left out
    block = orjson.loads(values[0])
    assert block["block"] == "usage-columns/1" and "input_tokens" in block and "reasoning_tokens" not in block


@pytest.mark.integration
def test_events_a_block_cannot_carry_travel_as_rows_beside_it(broker: str, topic: str) -> None:
    with Emitter(bootstrap_servers=broker, topic=topic, register_atexit=False) as emitter:
        emitter.emit(_event(1))
        emitter.emit(UsageEvent(event_id="x1", provider="openai", model="gpt-4o", new_field=1))
        emitter.emit({"event_id": "d1", "provider": "openai"})
        assert emitter.flush(20)
    values = consume_all(broker, topic, expect=2)
    kinds = sorted("block" if isinstance(orjson.loads(v), dict) else "rows" for v in values)
    assert kinds == ["block", "rows"]
    assert sorted(e["event_id"] for v in values for e in events_in(v)) == ["d1", "e1", "x1"]


@pytest.mark.integration
def test_batches_are_bounded_by_bytes(broker: str, topic: str) -> None:
    bulky = {f"k{k}": "v" * 200 for k in range(10)}  # ~2.2 kB an event
    with Emitter(bootstrap_servers=broker, topic=topic, max_batch_bytes=16_384, register_atexit=False) as emitter:
        for n in range(50):
            emitter.emit(_event(n).model_copy(update={"tags": bulky}))
        emitter.emit({"event_id": "d1", "provider": "openai", "tags": bulky})
        assert emitter.flush(20)
    values = consume_all(broker, topic, expect=50 * 2_200 // 16_384, idle_s=1.0)
    assert all(len(v) <= 16_384 for v in values)
    assert sum(len(events_in(v)) for v in values) == 51


def test_emit_never_blocks_and_counts_drops_when_no_broker_answers() -> None:
    dead_port = free_port()  # nothing listens here
    emitter = Emitter(bootstrap_servers=f"127.0.0.1:{dead_port}", topic="nowhere", max_queue_events=1000,
                      delivery_timeout_s=60, register_atexit=False)
    n = 20_000
    worst = 0.0
    for i in range(n):
        started = time.perf_counter()
        emitter.emit({"event_id": f"e{i}"})
        worst = max(worst, time.perf_counter() - started)
        if i == 499:
            time.sleep(1.0)  # the sender takes these and gets stuck on the dead broker; the buffer fills behind it
    stats = emitter.stats()
    # The sender is stuck retrying the broker, so the queue fills and the rest is dropped.
    # At most queue + one batch in flight were accepted.
    assert stats["enqueued"] <= 1000 + 1000
    assert stats["enqueued"] + stats["dropped_queue_full"] == n
    # A blocking call would wait out connection attempts (hundreds of ms); a queue put takes microseconds.
    assert worst < 0.05, f"emit() took {worst * 1000:.1f} ms in the worst case"
    started = time.perf_counter()
    emitter.close(timeout_s=1.0)
    assert time.perf_counter() - started < 3.0
    after = emitter.stats()
    assert after["dropped_shutdown"] > 0
    assert emitter.emit({"event_id": "late"}) is False
    assert emitter.stats()["dropped_shutdown"] == after["dropped_shutdown"] + 1


def test_unsendable_batch_is_counted_as_send_failed() -> None:
    emitter = Emitter(bootstrap_servers=f"127.0.0.1:{free_port()}", topic="nowhere", delivery_timeout_s=0.5,
                      register_atexit=False)
    for n in range(10):
        emitter.emit(_event(n))
    assert emitter.flush(10)
    assert emitter.stats()["dropped_send_failed"] == 10
    emitter.close(1)


def test_oversize_and_unencodable_events_are_counted() -> None:
    emitter = Emitter(bootstrap_servers=f"127.0.0.1:{free_port()}", topic="nowhere", max_batch_bytes=1024,
                      delivery_timeout_s=0.2, register_atexit=False)
    emitter.emit({"event_id": "big", "blob": "x" * 2000})
    emitter.emit({"event_id": "odd", "value": object()})
    assert emitter.flush(10)
    stats = emitter.stats()
    assert (stats["dropped_oversize"], stats["dropped_unencodable"]) == (1, 1)
    emitter.close(1)


def test_close_is_idempotent_and_context_manager_closes() -> None:
    with Emitter(bootstrap_servers="127.0.0.1:1", register_atexit=False) as emitter:
        pass
    emitter.close()
    emitter.close()
    assert emitter.emit({"event_id": "x"}) is False


@pytest.mark.integration
def test_a_forked_child_sends_its_own_events(broker: str, topic: str) -> None:
    emitter = Emitter(bootstrap_servers=broker, topic=topic, register_atexit=False)
    emitter.emit(_event(1))
    assert emitter.flush(20)
    parent_ledger_id = emitter.ledger.emitter_id
    pid = os.fork()
    if pid == 0:  # child: the parent's thread does not exist here; emit must start a new one
        ok = emitter.emit(_event(2)) and emitter.flush(20)
        # the child counts and reports only its own events: its ledger reports must not overwrite the parent's
        own = emitter.stats()["sent_events"] == 1 and emitter.ledger.emitter_id != parent_ledger_id
        os._exit(0 if ok and own else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    emitter.close()
    values = consume_all(broker, topic, expect=2)
    assert sorted(e["event_id"] for v in values for e in events_in(v)) == ["e1", "e2"]


@pytest.mark.integration
def test_an_emitter_the_host_let_go_of_still_sends_at_exit(broker: str, topic: str) -> None:
    script = textwrap.dedent("""
        import sys
        from spendstream.emitter import Emitter
        from spendstream.schemas import UsageEvent

        def work():  # the emitter is garbage once this returns; its events wait for the atexit hook
            emitter = Emitter(bootstrap_servers=sys.argv[1], topic=sys.argv[2], flush_interval_s=60)
            for n in range(10):
                emitter.emit(UsageEvent(event_id=f"x{n}", provider="openai", model="gpt-4o"))

        work()
    """)
    subprocess.run([sys.executable, "-c", script, broker, topic], check=True, timeout=60)
    values = consume_all(broker, topic, expect=1, timeout_s=10)
    assert sorted(e["event_id"] for v in values for e in events_in(v)) == [f"x{n}" for n in range(10)]
