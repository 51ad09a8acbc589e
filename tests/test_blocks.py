"""Blocks (many events as columns) take the fast path only where pydantic would agree, value for value."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import orjson
import pyarrow as pa
import pytest

from spendstream.agents.events import NotFast, UsageBlock, block_columns, events_table
from spendstream.agents.stages import EARLIEST_TS, process, validate
from spendstream.batches import WHOLE_RECORD, SourceRecord
from spendstream.emitter.encoding import encode_block
from spendstream.pricing import Pricer
from spendstream.schemas import UsageEvent
from spendstream.schemas.shape import FieldShape, field_shapes
from spendstream.schemas.usage import BLOCK_FORMAT, WIRE_REQUIRED
from tests.test_fuzz import corpus

PRICER = Pricer()
LATEST = datetime.now(timezone.utc) + timedelta(days=1)


def _random_event(rng: random.Random, n: int) -> UsageEvent:
    """A valid event with every field exercised, edge values included."""
    zone = timezone(timedelta(minutes=rng.choice([0, 0, 330, -480, 840])))
    ts = datetime.now(zone) - timedelta(seconds=rng.randrange(86_400 * 30), microseconds=rng.randrange(10**6))
    input_tokens = rng.choice([0, 1, 77, 128_000, 100_000_000])
    cached = rng.randint(0, input_tokens)
    write = rng.randint(0, input_tokens - cached)
    output = rng.choice([0, 5, 4_096])

    def maybe(value: object) -> object:
        return value if rng.random() < 0.5 else None

    return UsageEvent(
        event_id=rng.choice([f"e{n}", "é" * 128, f"{n}-" + "x" * 100]), ts=ts,
        request_id=maybe(f"r{n // 2}"), attempt=rng.choice([1, 1, 2, 7]),
        provider=rng.choice(["openai", "anthropic", "self-hosted"]),
        model=rng.choice(["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro", "no-such-model"]),
        deployment=maybe("pool-a"), mode=rng.choice(["realtime", "batch"]), service_tier=maybe("flex"),
        input_tokens=input_tokens, cached_input_tokens=cached, cache_write_tokens=write,
        cache_write_1h_tokens=rng.randint(0, write), output_tokens=output, reasoning_tokens=rng.randint(0, output),
        tokens_estimated=rng.random() < 0.2, tokenizer=maybe("tiktoken:o200k_base"),
        latency_ms=maybe(rng.choice([0.0, 12.5, 30_000.0])), ttft_ms=maybe(3.25),
        status=rng.choice(["ok", "error", "timeout", "rate_limited", "invalid_output"]),
        http_status=maybe(rng.choice([100, 200, 429, 599])),
        team=maybe("search"), feature=maybe("f" * 256), customer=maybe(f"c{n % 7}"), environment=maybe("prod"),
        user_hash=maybe("u" * 64), tags=rng.choice([{}, {}, {"route": "/a", "k" * 64: "v" * 256}]),
        prefix_fingerprint=maybe("ab" * 16), prefix_tokens=maybe(rng.choice([0, 1024])),
        max_tokens=maybe(4_096), service=maybe("svc"),
    )


def test_the_fast_path_gives_exactly_the_columns_pydantic_gives() -> None:
    rng = random.Random(7)
    for trial in range(40):
        events = [_random_event(rng, trial * 100 + n) for n in range(rng.randint(1, 60))]
        fast, tags = block_columns(encode_block(events), earliest=EARLIEST_TS, latest=LATEST)
        exact = events_table([UsageEvent.model_validate_json(e.model_dump_json()) for e in events])
        assert fast.equals(exact), f"trial {trial}: {fast.to_pylist()[:1]} != {exact.to_pylist()[:1]}"
        assert (tags or [{}] * len(events)) == [e.tags for e in events]


def _block(items: list[dict]) -> bytes:
    """Items as a block: a column per key any item has, null where an item lacks it."""
    names = list(dict.fromkeys(name for item in items for name in item))
    return orjson.dumps({"block": "usage-columns/1", **{name: [item.get(name) for item in items] for name in names}})


def _outcome(value: bytes) -> tuple[list[str], list[tuple[int, str]]]:
    result = process([SourceRecord("usage", 0, 0, value)], PRICER)
    ids = [] if result.events is None else sorted(result.events["event_id"].to_pylist())
    return ids, sorted((d.item_index, d.reason) for d in result.dead_letters)


@pytest.mark.parametrize("index", range(23))
def test_a_bad_value_in_a_block_gets_the_same_dead_letter_as_in_a_json_array(index: int) -> None:
    """The fuzz corpus's mutations, sent as blocks: each outcome equals the exact path's, item by item."""
    records, _, _ = corpus(f"blk{index}")
    items = orjson.loads(records[index])
    as_rows = orjson.dumps([{k: v for k, v in item.items() if v is not None} for item in items])
    block = _block(items)
    with pytest.raises(NotFast):
        block_columns(block, earliest=EARLIEST_TS, latest=LATEST)
    ids, dead = _outcome(block)
    assert (ids, dead) == _outcome(as_rows)
    assert len(ids) == 1 and len(dead) == 1  # the good event is kept, the bad one says why


@pytest.mark.parametrize("ts", [
    "2026-11-01T12:00:00Z", "2026-11-01T12:00:00.123456Z", "2026-11-01T12:00:00.1+05:30", "2026-11-01T12:00:00-00:00",
    "2026-11-01T12:00:00+23:59", "2026-11-01T12:00:00+24:00", "2026-11-01T12:00:00+05:99", "2026-11-01T12:00:00+02",
    "2026-11-01T12:00:00+0200", "2026-11-01T12Z", "2026-11-01T12:00Z", "2026-11-01 12:00:00Z", "2026-11-01t12:00:00z",
    "2026-11-01T12:00:00.1234567Z", "2026-11-01T12:00:00.9999999Z", "2026-02-30T00:00:00Z", "2026-11-01T24:00:00Z",
    "2026-11-01T12:00:60Z", "2026-11-01T12:00:00", "2026-11-01", "1700000000", "",
])
def test_timestamps_take_the_fast_path_only_where_pydantic_reads_them_the_same(ts: str) -> None:
    items = [{"event_id": "t1", "ts": ts, "provider": "openai", "model": "gpt-4o", "input_tokens": 5},
             {"event_id": "t2", "ts": "2026-11-01T12:00:00Z", "provider": "openai", "model": "gpt-4o"}]
    block, rows = _block(items), orjson.dumps(items)
    assert _outcome(block) == _outcome(rows)
    fast = process([SourceRecord("usage", 0, 0, block)], PRICER).events
    exact = process([SourceRecord("usage", 0, 0, rows)], PRICER).events
    assert fast["ts"].to_pylist() == exact["ts"].to_pylist()


def test_a_field_the_version_does_not_know_is_kept_not_dropped() -> None:
    event = {"event_id": "x1", "ts": "2026-11-01T12:00:00Z", "provider": "openai", "model": "gpt-4o",
             "input_tokens": 10, "new_field": 3}
    result = process([SourceRecord("usage", 0, 0, _block([event]))], PRICER)
    assert result.events["extra"].to_pylist() == ['{"new_field":3}']


@pytest.mark.parametrize(("value", "reason"), [
    (b'{"block": "usage-columns/9", "event_id": ["a"]}', "unknown block format 'usage-columns/9'"),
    (b'{"block": "usage-columns/1", "event_id": ["a", "b"], "ts": ["2026-11-01T12:00:00Z"]}',
     "block columns differ in length (event_id=2, ts=1)"),
    (b'{"block": "usage-columns/1", "event_id": "a"}', "block column 'event_id' is JSON str, expected an array"),
])
def test_an_unreadable_block_is_dead_lettered_whole_with_the_reason(value: bytes, reason: str) -> None:
    result = process([SourceRecord("usage", 0, 5, value)], PRICER)
    [dead] = result.dead_letters
    assert dead.item_index == WHOLE_RECORD and reason in dead.reason and dead.raw == value
    assert result.events is None


def test_blocks_and_arrays_in_one_batch_are_stored_together_with_their_sources() -> None:
    events = [_random_event(random.Random(n), n) for n in range(5)]
    records = [SourceRecord("usage", 1, 10, encode_block(events[:3])),
               SourceRecord("usage", 2, 20, orjson.dumps([orjson.loads(e.model_dump_json()) for e in events[3:]]))]
    result = process(records, PRICER)
    assert result.num_events == 5 and result.dead_letters == []
    sources = zip(result.events["source_partition"].to_pylist(), result.events["source_offset"].to_pylist(),
                  strict=True)
    assert list(sources) == [(1, 10)] * 3 + [(2, 20)] * 2
    assert result.events.schema.field("tags").type == pa.map_(pa.string(), pa.string())
    assert [result.event(i).event_id for i in range(5)] == [e.event_id for e in events]


# -- the block decoder is made from the contract: at every bound it agrees with pydantic ----------

def _edges(shape: FieldShape) -> list[tuple[object, bool]]:
    """Values at and just past each bound of a field, and whether they are within it."""
    bounds, edges = shape.constraints, []
    step = 1 if shape.kind is int else 0.5
    for name, inside in (("ge", 0), ("gt", step), ("le", 0), ("lt", -step)):
        if name in bounds:
            outside = -step if name in ("ge", "gt") else step
            edges += [(bounds[name] + inside, True), (bounds[name] + inside + outside, False)]
    for name, outside in (("min_length", -1), ("max_length", 1)):
        if name in bounds and bounds[name] + outside >= 0:
            make = (lambda n: {f"k{i}": "v" for i in range(n)}) if shape.kind is dict else (lambda n: "é" * n)
            edges += [(make(bounds[name]), True), (make(bounds[name] + outside), False)]
    if shape.literals is not None:
        edges += [(value, True) for value in shape.literals] + [("nope" if shape.kind is str else 2, False)]
    wrong_type = {str: 5, int: "5", float: "1.5", bool: "true", datetime: 1_700_000_000, dict: ["k"]}[shape.kind]
    return edges + [(wrong_type, False)] + ([] if shape.nullable else [(None, False)])


@pytest.mark.parametrize("shape", field_shapes(UsageEvent), ids=lambda shape: shape.name)
def test_at_each_bound_of_a_field_a_block_takes_the_fast_path_exactly_where_pydantic_agrees(shape: FieldShape) -> None:
    """Bounds, literals, types and nulls as the contract declares them, field by field (a new field included).

    Within its bounds a value takes the fast path exactly where pydantic accepts it. The fast
    path never takes a value pydantic refuses (it may leave to pydantic one that pydantic
    converts, such as "5" for a float), and where it takes one, its columns are pydantic's.
    """
    record = SourceRecord("usage", 0, 0, b"")
    base = {"event_id": "b1", "ts": (LATEST - timedelta(days=2)).isoformat(), "provider": "openai", "model": "gpt-4o"}
    for value, within in _edges(shape):
        item = base | {shape.name: value}
        block = orjson.dumps({"block": BLOCK_FORMAT, **{name: [v] for name, v in item.items()}})
        events, _ = validate(record, [(0, {k: v for k, v in item.items() if v is not None})])
        try:
            fast, _ = block_columns(block, earliest=EARLIEST_TS, latest=LATEST)
        except NotFast:
            fast = None
        label = f"{shape.name}={value!r:.40}"
        if within:
            assert (fast is not None) == bool(events), f"{label}: the fast path {'refuses' if events else 'takes'} it"
        if fast is not None:
            assert events and fast.equals(events_table(events)), f"{label}: the fast path took what pydantic refuses"


def test_the_block_decoder_has_a_column_for_every_field_of_the_contract() -> None:
    assert set(UsageBlock.__struct_fields__) == {"block", *UsageEvent.model_fields}


def test_the_block_decoder_checks_every_validator_of_the_contract() -> None:
    """A validator is code, not shape: the decoder cannot be made from it, block_columns checks each by hand."""
    checked = {"_bounded_tags": "the tag key and value bounds of the tags column's type",
               "_parts_within_totals": "the token parts check in block_columns"}
    decorators = UsageEvent.__pydantic_decorators__
    found = {*decorators.validators, *decorators.field_validators, *decorators.root_validators,
             *decorators.model_validators}
    assert found == set(checked), (f"UsageEvent's validators {sorted(found)} differ from those the fast path checks "
                                   f"{sorted(checked)}: check the new one in agents/events.py, then name it here")


def test_a_column_a_block_leaves_out_has_one_default_for_every_event() -> None:
    """A default made per event (a factory, such as now()) cannot fill a left-out column: the wire must require it."""
    for name, field in UsageEvent.model_fields.items():
        if name not in WIRE_REQUIRED and not field.is_required():
            first, second = field.get_default(call_default_factory=True), field.get_default(call_default_factory=True)
            assert first == second, f"{name}: its default changes per event; add it to WIRE_REQUIRED"
