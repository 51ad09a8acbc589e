"""Usage events as Arrow columns: the fast path for blocks, the exact path for everything else.

The emitter sends many events per Kafka record as one **block**: a JSON object of
columns (``{"block": "usage-columns/1", "event_id": [...], "ts": [...], ...}``,
see :func:`spendstream.emitter.encoding.encode_block`). A block is decoded in one
msgspec call whose types, made from the contract (:func:`block_struct`), carry its
constraints (lengths, ranges, literals, strict integers), and its columns go straight
into Arrow: no pydantic model, no dict, no Python object per event beyond the decoded values.

The pydantic :class:`~spendstream.schemas.usage.UsageEvent` stays the authority.
The fast path accepts only blocks whose every value it can vouch for; anything
else about a block (a wrong type, a value out of bounds, parts above totals, an
implausible time, a field this version does not know) sends the whole record to
the exact path, which transposes it into events and validates each with pydantic,
so every bad event gets its own dead letter with pydantic's reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.batches import EVENT_COLUMNS, EVENT_SCHEMA
from spendstream.schemas.shape import FieldShape, field_shapes
from spendstream.schemas.usage import (
    BLOCK_FORMAT,
    MAX_TAG_KEY_CHARS,
    MAX_TAG_VALUE_CHARS,
    WIRE_REQUIRED,
    UsageEvent,
)

# -- the block's wire types: the contract's constraints, checked by msgspec in C ----------

# Tag keys and values are bounded by a validator of the contract (code, not shape): its
# bounds as msgspec types.
_TagKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TAG_KEY_CHARS)]
_TagValue = Annotated[str, msgspec.Meta(max_length=MAX_TAG_VALUE_CHARS)]


def _value_type(shape: FieldShape) -> Any:
    """The msgspec type of one value of a field: the contract's type, bounds and literals.

    Times travel as text and are parsed by Arrow in :func:`block_columns`, once their
    form is checked.
    """
    if shape.literals is not None:
        type_: Any = Literal[shape.literals]
    elif shape.kind is datetime:
        type_ = str
    elif shape.kind is dict:
        type_ = dict[_TagKey, _TagValue] if shape.name == "tags" else dict[str, str]
    else:
        type_ = shape.kind
    if shape.constraints and shape.literals is None:
        type_ = Annotated[type_, msgspec.Meta(**shape.constraints)]
    return type_ | None if shape.nullable else type_


def block_struct(model: type[UsageEvent]) -> type[msgspec.Struct]:
    """The msgspec struct a block of ``model`` events decodes into: a column (a list) per field.

    The columns the wire requires come first and must be present; any other column
    may be left out (every event then has the contract's default). A column the
    contract does not have fails the decode (``forbid_unknown_fields``), so the block
    goes to pydantic, which keeps such fields in ``extra``.
    """
    shapes = field_shapes(model)
    required = [(s.name, list[_value_type(s)]) for s in shapes if s.required or s.name in WIRE_REQUIRED]
    optional = [(s.name, list[_value_type(s)] | None, None) for s in shapes
                if not (s.required or s.name in WIRE_REQUIRED)]
    return msgspec.defstruct(model.__name__ + "Block", [("block", Literal[BLOCK_FORMAT]), *required, *optional],
                             forbid_unknown_fields=True, module=__name__)


# Made once at import from the contract: at run time a plain msgspec struct, decoded in C.
UsageBlock = block_struct(UsageEvent)
_TIMES = tuple(s.name for s in field_shapes(UsageEvent) if s.kind is datetime)
_DECODER = msgspec.json.Decoder(UsageBlock)
# The shape the emitter writes (pydantic accepts more, and those take the exact path): Arrow's
# ISO 8601 parser alone would also take forms pydantic refuses, such as "+02" offsets.
RFC3339 = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]\d\d:\d\d)$"


class _Kind(msgspec.Struct):
    block: Any = None


_KIND = msgspec.json.Decoder(_Kind)
_DEFAULTS = {name: field.get_default(call_default_factory=True) for name, field in UsageEvent.model_fields.items()}


class NotABlock(Exception):
    """The record is not a block (events as a JSON array or object, or not JSON at all)."""


class NotFast(Exception):
    """This block needs the exact path (the reason is for logs; pydantic gives the events' own)."""


def block_columns(value: bytes, *, earliest: datetime,
                  latest: datetime) -> tuple[pa.Table, list[dict[str, str]] | None]:
    """A valid block as event columns (``EVENT_SCHEMA``) and its tags (None when no event has any).

    Raises :class:`NotABlock` for records that are not blocks, and :class:`NotFast`
    when any value of a block needs pydantic's judgement.
    """
    if value.lstrip()[:1] != b"{":
        raise NotABlock
    try:
        block = _DECODER.decode(value)
    except msgspec.ValidationError as exc:
        if not _is_block(value):
            raise NotABlock from None  # an event as a JSON object, or not JSON at all
        raise NotFast(str(exc)) from None
    except (msgspec.DecodeError, RecursionError):
        # Not JSON (NaN, truncated, trailing text, a lone surrogate) or nested too deep for
        # msgspec: the row path dead-letters it with orjson's reason.
        raise NotABlock from None
    n = len(block.event_id)
    for name in UsageBlock.__struct_fields__[1:]:
        column = getattr(block, name)
        if column is not None and len(column) != n:
            raise NotFast(f"column {name} has {len(column)} values, event_id has {n}")

    counts = {name: _counts(getattr(block, name), n) for name in
              ("input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens",
               "output_tokens", "reasoning_tokens")}
    if (np.any(counts["cached_input_tokens"] + counts["cache_write_tokens"] > counts["input_tokens"])
            or np.any(counts["cache_write_1h_tokens"] > counts["cache_write_tokens"])
            or np.any(counts["reasoning_tokens"] > counts["output_tokens"])):
        raise NotFast("token parts exceed their totals")
    times = {name: _times(column) for name in _TIMES if (column := getattr(block, name)) is not None}
    ts = times["ts"]
    if n and (pc.min(ts).as_py() < earliest or pc.max(ts).as_py() > latest):
        raise NotFast("a timestamp is implausible")

    event_id = pa.array(block.event_id, pa.string())
    columns: dict[str, pa.Array] = {"event_id": event_id}
    for name, type_ in EVENT_COLUMNS:
        if name in columns:
            continue
        if name in times:
            columns[name] = times[name].cast(type_, safe=False)
        elif name in counts:
            columns[name] = pa.array(counts[name], type_)
        elif name == "extra":
            columns[name] = pa.repeat(pa.scalar("", pa.string()), n)
        else:
            column = getattr(block, name)
            columns[name] = (pa.array(column, type_) if column is not None
                             else pa.repeat(pa.scalar(_DEFAULTS[name], type_), n))
    columns["request_id"] = pc.coalesce(columns["request_id"], event_id)
    tags = block.tags if block.tags is not None and any(block.tags) else None
    return pa.table(columns, schema=EVENT_SCHEMA), tags


def _is_block(value: bytes) -> bool:
    """Whether the record says it is a block. Malformed JSON says nothing: it is not one.

    msgspec validates while it parses, so a type error can surface before a syntax
    error later in the record; the syntax error must not escape from here.
    """
    try:
        return _KIND.decode(value).block is not None
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return False


def _times(column: list[str | None]) -> pa.Array:
    """A column of times, parsed where each is RFC 3339 with a zone (nulls stay null); NotFast otherwise."""
    text = pa.array(column, pa.string())
    if not pc.all(pc.match_substring_regex(text, RFC3339)).as_py():
        raise NotFast("a timestamp is not RFC 3339 with a zone")
    try:
        return pc.cast(text, pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid as exc:  # a date that does not exist, an offset out of range
        raise NotFast(str(exc)) from None


def _counts(column: list[int] | None, n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.int64) if column is None else np.array(column, dtype=np.int64)


def block_items(value: bytes) -> list[tuple[int, Any]] | str:
    """A block's events as plain objects for pydantic (the exact path), or why the block is unreadable."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"record is not valid JSON: {exc}"
    if doc.get("block") != BLOCK_FORMAT:
        return f"unknown block format {str(doc.get('block'))[:80]!r}; this worker reads {BLOCK_FORMAT!r}"
    columns = {name: values for name, values in doc.items() if name != "block"}
    for name, values in columns.items():
        if not isinstance(values, list):
            return f"block column {name[:80]!r} is JSON {type(values).__name__}, expected an array"
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        sizes = ", ".join(f"{name[:80]}={len(values)}" for name, values in columns.items())
        return f"block columns differ in length ({sizes})"
    n = lengths.pop() if lengths else 0
    # A null stands for "not given", so the contract's default (or its "missing" error) applies.
    return [(i, {name: values[i] for name, values in columns.items() if values[i] is not None}) for i in range(n)]


def events_table(events: Sequence[UsageEvent]) -> pa.Table:
    """Validated events (the exact path) as the same columns the fast path makes."""
    columns = {name: pa.array([getattr(e, name) for e in events], type_) for name, type_ in EVENT_COLUMNS
               if name not in ("request_id", "extra")}
    columns["request_id"] = pa.array([e.request_id or e.event_id for e in events], pa.string())
    columns["extra"] = pa.array([_extra_json(e.extra_fields) for e in events], pa.string())
    return pa.table(columns, schema=EVENT_SCHEMA)


def _extra_json(extra: dict[str, object]) -> str:
    return orjson.dumps(extra, default=str).decode() if extra else ""
