"""The pure stages: decode, validate, price. No broker, no ClickHouse."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import orjson

from spendstream.agents.stages import decode, process
from spendstream.batches import WHOLE_RECORD, SourceRecord
from spendstream.pricing import Pricer


def _event(n: int, **fields: object) -> dict[str, object]:
    return {"event_id": f"e{n}", "ts": "2026-11-01T12:00:00Z", "provider": "openai", "model": "gpt-4o",
            "input_tokens": 1000, "output_tokens": 100, **fields}


def _record(value: bytes, offset: int = 0) -> SourceRecord:
    return SourceRecord("usage", 0, offset, value)


def test_array_record_carries_many_events() -> None:
    result = process([_record(orjson.dumps([_event(1), _event(2), _event(3)]))], Pricer())
    assert result.events['event_id'].to_pylist() == ["e1", "e2", "e3"]
    assert result.dead_letters == []


def test_single_object_record_is_accepted() -> None:
    result = process([_record(orjson.dumps(_event(1)))], Pricer())
    assert result.num_events == 1 and result.dead_letters == []


def test_wrong_type_goes_to_dead_letters_and_the_rest_of_the_batch_is_kept() -> None:
    bad = _event(2, input_tokens="many")
    result = process([_record(orjson.dumps([_event(1), bad, _event(3)]))], Pricer())
    assert result.events['event_id'].to_pylist() == ["e1", "e3"]
    [dead] = result.dead_letters
    assert dead.item_index == 1 and dead.event_id == "e2"
    assert "input_tokens" in dead.reason and "integer" in dead.reason
    assert orjson.loads(dead.raw) == bad


def test_unreadable_record_is_dead_lettered_whole_with_its_bytes() -> None:
    raw = b'[{"event_id": "e1", "provider": '
    result = process([_record(raw, offset=7), _record(orjson.dumps([_event(9)]), offset=8)], Pricer())
    [dead] = result.dead_letters
    assert (dead.item_index, dead.source.offset, dead.raw) == (WHOLE_RECORD, 7, raw)
    assert "not valid JSON" in dead.reason
    assert result.events['event_id'].to_pylist() == ["e9"]


def test_non_object_items_and_scalars_are_dead_lettered() -> None:
    items, dead = decode(_record(b"42"))
    assert items == [] and "expected an object" in dead[0].reason
    result = process([_record(b'[1, "x"]')], Pricer())
    assert [d.item_index for d in result.dead_letters] == [0, 1]


def test_missing_event_id_is_dead_lettered_not_invented() -> None:
    event = _event(1)
    del event["event_id"]
    result = process([_record(orjson.dumps(event))], Pricer())
    assert result.events is None and result.priced is None
    assert "missing required field(s) event_id" in result.dead_letters[0].reason


def test_empty_record_is_dead_lettered() -> None:
    result = process([_record(b"")], Pricer())
    assert result.dead_letters[0].reason == "empty record value"


def test_priced_event_carries_exact_cost() -> None:
    result = process([_record(orjson.dumps(_event(1, input_tokens=1_000_000, output_tokens=1_000_000)))], Pricer())
    record = result.cost_record(0)
    # gpt-4o: $2.50 per million input tokens, $10 per million output tokens
    assert record.total_cost == Decimal("12.50")
    assert isinstance(record.total_cost, Decimal)


def test_items_too_deep_to_re_encode_keep_the_whole_record() -> None:
    raw = b'{"a": ' * 600 + b"1" + b"}" * 600
    result = process([_record(raw)], Pricer())
    (dead,) = result.dead_letters
    assert dead.raw == raw and "missing required field(s)" in dead.reason


def test_implausible_timestamps_are_dead_lettered() -> None:
    result = process([_record(orjson.dumps([_event(1, ts="2009-01-01T00:00:00Z"),
                                            _event(2, ts="2099-01-01T00:00:00Z")]))], Pricer())
    reasons = [d.reason for d in result.dead_letters]
    assert "before 2020-01-01" in reasons[0] and "in the future" in reasons[1]


def test_a_json_record_is_judged_by_the_clock_process_is_given_as_a_block_is() -> None:
    """A replay or a test runs ``process`` at a clock of its own: an event an hour after it is plausible on the
    exact path (JSON) as on the fast path, and a day ahead of it is skew whatever the wall clock says."""
    now = datetime(2031, 5, 1, 12, tzinfo=timezone.utc)
    result = process([_record(orjson.dumps([_event(1, ts="2031-05-01T13:00:00Z"),
                                            _event(2, ts="2031-05-03T12:00:00Z")]))], Pricer(), now=now)
    assert result.events["event_id"].to_pylist() == ["e1"]
    [dead] = result.dead_letters
    assert dead.event_id == "e2" and "in the future" in dead.reason


def test_an_internal_error_dead_letters_the_batch_whole() -> None:
    from spendstream.agents.stages import internal_error

    (dead,) = internal_error([_record(b"[{}]", offset=3)], RuntimeError("boom"))
    assert dead.raw == b"[{}]" and dead.item_index == -1 and "RuntimeError: boom" in dead.reason


def test_a_batch_of_many_bad_items_prints_in_proportion_to_itself() -> None:
    """Every dead letter of an array record refers to its record; a repr that printed the record's bytes in each
    would grow with the square of the record (1,000 bad items of ~125 bytes: ~125 MB, for a log line or a test
    failure). Each item's own bytes are still in its dead letter."""
    items = [_event(n, ts="2019-02-12T06:00:00Z") for n in range(1_000)]
    record = _record(orjson.dumps(items))
    result = process([record], Pricer())
    assert len(result.dead_letters) == 1_000
    assert all(d.source.value == record.value for d in result.dead_letters)  # the record itself is kept
    assert len(repr(result)) < 40 * len(record.value)
