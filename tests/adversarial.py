"""A corpus of raw Kafka record values an attacker, a bug or a stranger could send to the usage topic.

Each kind is (name, value, expected): ``expected`` is how many events the record
must store and, when some of it must be refused, a text that every dead letter of
it must contain. Every record must end as stored events or dead letters: never
neither, never an exception, never costing a neighbour.
"""

from __future__ import annotations

import gzip
import uuid
from datetime import datetime, timedelta, timezone

import orjson

from spendstream.emitter.encoding import encode_block
from spendstream.schemas import UsageEvent

TS = "2026-11-30T10:00:00Z"


def event(**fields: object) -> dict:
    base = {"event_id": f"adv-{uuid.uuid4().hex}", "ts": TS, "provider": "openai", "model": "gpt-4o-mini",
            "input_tokens": 100, "output_tokens": 10, "team": "red"}
    return {**base, **fields}


def js(value: object) -> bytes:
    return orjson.dumps(value)


def block(n: int = 2, **columns: object) -> dict:
    events = [UsageEvent.model_validate(event()) for _ in range(n)]
    doc = orjson.loads(encode_block(events))
    doc.update(columns)
    return doc


def corpus() -> list[tuple[str, bytes, int, str | None]]:
    """(kind, record value, events it stores, text each of its dead letters holds — None: no dead letter)."""
    now = datetime.now(timezone.utc)
    ok = [
        ("one event object", js(event()), 1, None),
        ("array of three events", js([event(), event(), event()]), 3, None),
        ("emitter block of two", encode_block([UsageEvent.model_validate(event()) for _ in range(2)]), 2, None),
        ("unknown extra field kept in extra", js(event(future_field="x")), 1, None),
        ("tags", js(event(tags={"env": "prod", "ticket": "T-1"})), 1, None),
        ("model with no price: stored unpriced", js(event(provider="self-hosted", model="my-llama")), 1, None),
        ("ts with +02:00 offset", js(event(ts="2026-11-30T12:00:00+02:00")), 1, None),
        ("every token type", js(event(input_tokens=1000, cached_input_tokens=200, cache_write_tokens=100,
                                      cache_write_1h_tokens=50, output_tokens=300, reasoning_tokens=100)), 1, None),
        ("duplicate keys: the last one counts", b'{"event_id": "dup-key-1", "event_id": "adv-' +
         uuid.uuid4().hex.encode() + b'", "ts": "' + TS.encode() + b'", "provider": "openai", "model": "gpt-4o"}', 1,
         None),
        ("block with nulls in optional columns", js(block(2, team=[None, "blue"], http_status=[None, None])), 2, None),
        ("unicode in labels", js(event(team="équipe-日本", feature="🚀")), 1, None),
        ("escaped surrogate pair (valid)", js(event(team="\U0001f600")), 1, None),
        ("many events in one array", js([event() for _ in range(200)]), 200, None),
        # pydantic reads an integer ts as Unix time (milliseconds when it is this large)
        ("ts as epoch milliseconds", js(event(ts=1764496800000)), 1, None),
    ]
    not_json = "not valid JSON"
    bad = [
        ("empty value", b"", 0, "empty record value"),
        ("whitespace only", b"   \n", 0, not_json),
        ("NaN", b'{"event_id": "a", "input_tokens": NaN}', 0, not_json),
        ("Infinity", b'{"event_id": "a", "latency_ms": Infinity}', 0, not_json),
        ("-Infinity", b'{"event_id": "a", "latency_ms": -Infinity}', 0, not_json),
        ("truncated object", js(event())[:-7], 0, not_json),
        ("trailing text", js(event()) + b" trailing", 0, not_json),
        ("two objects glued", js(event()) + js(event()), 0, not_json),
        ("lone high surrogate", b'{"event_id": "\\ud800", "ts": "' + TS.encode() + b'"}', 0, not_json),
        ("lone low surrogate", b'{"team": "\\udc00"}', 0, not_json),
        ("lone surrogate in a block's event_id", js(block(1)).replace(b'"event_id":["', b'"event_id":["\\ud800'),
         0, not_json),
        ("NaN inside a block", js(block(1)).replace(b'"input_tokens":[100]', b'"input_tokens":[NaN]'), 0, not_json),
        ("10,000-deep object", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, 0, not_json),
        ("10,000-deep array", b"[" * 10_000 + b"]" * 10_000, 0, not_json),
        ("invalid UTF-8", b'{"event_id": "\xff\xfe"}', 0, not_json),
        ("UTF-8 BOM", b"\xef\xbb\xbf" + js(event()), 0, not_json),
        ("UTF-16", js(event()).decode().encode("utf-16"), 0, not_json),
        ("gzip bytes", gzip.compress(js(event())), 0, not_json),
        ("XML", b"<event><id>1</id></event>", 0, not_json),
        ("JSON string", b'"an event"', 0, "expected an object"),
        ("JSON number", b"42", 0, "expected an object"),
        ("JSON true", b"true", 0, "expected an object"),
        ("JSON null", b"null", 0, "expected an object"),
        ("empty array", b"[]", 0, "no events"),
        ("empty object", b"{}", 0, "missing required field"),
        ("array of numbers", b"[1, 2]", 0, "expected an object"),
        ("array of arrays", b"[[1], [2]]", 0, "expected an object"),
        ("missing event_id", js({k: v for k, v in event().items() if k != "event_id"}), 0, "event_id"),
        ("missing ts", js({k: v for k, v in event().items() if k != "ts"}), 0, "ts"),
        ("missing provider", js({k: v for k, v in event().items() if k != "provider"}), 0, "provider"),
        ("missing model", js({k: v for k, v in event().items() if k != "model"}), 0, "model"),
        ("null model", js(event(model=None)), 0, "model"),
        ("empty event_id", js(event(event_id="")), 0, "event_id"),
        ("event_id of 129 characters", js(event(event_id="x" * 129)), 0, "event_id"),
        ("event_id a number", js(event(event_id=12345)), 0, "event_id"),
        ("model of 129 characters", js(event(model="m" * 129)), 0, "model"),
        ("ts not a date", js(event(ts="yesterday")), 0, "ts"),
        ("ts without a zone", js(event(ts="2026-11-30T10:00:00")), 0, "ts"),
        ("ts ten days ahead", js(event(ts=(now + timedelta(days=10)).isoformat())), 0, "future"),
        ("ts before 2020", js(event(ts="2019-06-01T00:00:00Z")), 0, "before 2020"),
        ("negative tokens", js(event(input_tokens=-1)), 0, "input_tokens"),
        ("tokens beyond the bound", js(event(output_tokens=10**15)), 0, "output_tokens"),
        ("fractional tokens", js(event(input_tokens=1.5)), 0, "input_tokens"),
        ("tokens as text", js(event(input_tokens="100")), 0, "input_tokens"),
        ("cached above input", js(event(input_tokens=10, cached_input_tokens=20)), 0, "cached_input_tokens"),
        ("reasoning above output", js(event(output_tokens=10, reasoning_tokens=20)), 0, "reasoning_tokens"),
        ("1h writes above writes", js(event(input_tokens=100, cache_write_tokens=5, cache_write_1h_tokens=9)), 0,
         "cache_write_1h_tokens"),
        ("attempt 0", js(event(attempt=0)), 0, "attempt"),
        ("http_status 99", js(event(http_status=99)), 0, "http_status"),
        ("http_status 600", js(event(http_status=600)), 0, "http_status"),
        ("unknown status", js(event(status="weird")), 0, "status"),
        ("unknown mode", js(event(mode="turbo")), 0, "mode"),
        ("negative latency", js(event(latency_ms=-5)), 0, "latency_ms"),
        ("33 tags", js(event(tags={f"k{i}": "v" for i in range(33)})), 0, "tags"),
        ("tag value of 257 characters", js(event(tags={"k": "v" * 257})), 0, "tags"),
        ("tags not an object", js(event(tags=["a", "b"])), 0, "tags"),
        ("team of 257 characters", js(event(team="t" * 257)), 0, "team"),
        ("schema_version 3", js(event(schema_version=3)), 0, "schema_version"),
        ("a GpuSample on the usage topic", js({"sample_id": "s1", "ts": TS, "deployment": "d", "interval_s": 15}), 0,
         "missing required field"),
        ("a ledger report on the usage topic", js({"emitter_id": "e", "service": "s", "minute": TS, "events": 3}), 0,
         "missing required field"),
        ("unknown block format", js(block(1, block="usage-columns/9")), 0, "unknown block format"),
        ("block columns of different lengths", js(block(2, team=["a"])), 0, "differ in length"),
        ("block column not an array", js(block(2, team="a")), 0, "expected an array"),
        ("empty block", js({"block": "usage-columns/1", "event_id": [], "ts": [], "provider": [], "model": []}), 0,
         "no events"),
    ]
    mixed = [
        ("array: one good, one bad", js([event(), event(input_tokens=-5)]), 1, "input_tokens"),
        ("block: one bad event among three", js(block(3, attempt=[1, 0, 1])), 2, "attempt"),
        ("5 MB record with one event", js(event(notes="n" * 5_000_000)), 1, None),
    ]
    return ok + bad + mixed
