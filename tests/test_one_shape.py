"""One shape: every field of a contract travels from the emitter to its ClickHouse table, or a test fails naming it.

The contracts (UsageEvent, GpuSample, LedgerEntry) are the one source of a record's
shape; the block decoder and the Arrow columns derive from them and the tables are
checked against them. The checks here are generic over the fields: each field is set
to a value other than its default, sent, processed, stored in a migrated chdb store
and read back. ``test_a_field_added_to_a_contract_without_a_column_fails_naming_it``
adds a field to each contract (in a child process, before the pipeline is imported)
and proves that these same checks then fail and name it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from pydantic import BaseModel

from spendstream.agents.events import NotFast, block_columns
from spendstream.agents.stages import EARLIEST_TS, GPU_WIRE_REQUIRED, process, process_gpu, process_ledger
from spendstream.batches import EVENT_COLUMNS, SourceRecord, contract_columns
from spendstream.emitter import Emitter
from spendstream.emitter.encoding import encode_event
from spendstream.pricing import Pricer
from spendstream.schemas import GpuSample, LedgerEntry, UsageEvent
from spendstream.schemas.ledger import LEDGER_WIRE_REQUIRED
from spendstream.schemas.shape import FieldShape, field_shapes
from spendstream.schemas.usage import WIRE_REQUIRED
from spendstream.sinks.rows import (
    GPU_COLUMNS,
    LEDGER_COLUMNS,
    clickhouse_type,
    gpu_sample_table,
    ledger_table,
    usage_table,
)
from spendstream.sinks.store import Store
from tests.conftest import consume_all

ROOT = Path(__file__).parent.parent
# Token counts are bounded by each other (the contract's model validator), so they are chosen together.
TOKENS = {"input_tokens": 900, "cached_input_tokens": 300, "cache_write_tokens": 200, "cache_write_1h_tokens": 50,
          "output_tokens": 400, "reasoning_tokens": 100}
# A field with a pattern needs a value of its form (money as decimal text: schemas/_types.py).
PATTERNED = {"provider_cost_usd": "0.001234500000000001"}
# What the pipeline stores for a field left empty: the contract's value of another field.
FILLED = {"usage_events": {"request_id": "event_id"}}  # one attempt is its own request (agents/events.py)


# -- values: every field away from its default, within its bounds, distinct per field ------------

def full_values(model: type[BaseModel], run: str, chosen: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A value for every field of ``model`` (except constant ones) that is not its default."""
    base = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=3)
    values = {}
    for i, shape in enumerate(field_shapes(model)):
        if shape.constant:
            continue
        default = model.model_fields[shape.name].get_default(call_default_factory=True)
        value = (chosen or {}).get(shape.name, _value(shape, i, run, base, default))
        assert value != default, f"{model.__name__}.{shape.name}: no test value other than its default {default!r}"
        values[shape.name] = value
    return values


def _value(shape: FieldShape, i: int, run: str, base: datetime, default: Any) -> Any:
    bounds = shape.constraints
    if shape.literals is not None:
        return next((v for v in shape.literals if v != default), default)
    if shape.kind is str:
        return f"{shape.name}-{run}"[:bounds.get("max_length", 256)]
    if shape.kind is bool:
        return not default
    if shape.kind is int:
        low = bounds.get("ge", bounds.get("gt", -1) + 1)
        return min(low + 1 + i, bounds.get("le", low + 1 + i))
    if shape.kind is float:
        low = bounds.get("ge", bounds.get("gt", 0.0))
        return low + (bounds.get("le", low + 1000.0) - low) * (i + 1) / 64
    if shape.kind is datetime:
        return base - timedelta(minutes=i, milliseconds=i)  # the tables keep milliseconds
    return {f"k{i}": f"v-{run}"}  # dict: the only other kind a shape has


def bare(model: type[BaseModel], values: Mapping[str, Any], wire_required: tuple[str, ...], **ids: str) -> Any:
    """``model`` with only the fields the wire requires: every other field at its default."""
    required = {n for n, f in model.model_fields.items() if f.is_required()} | set(wire_required)
    return model(**{name: value for name, value in values.items() if name in required} | ids)


# -- the checks, shared with the child process of the mutation test --------------------------------

def table_types(store: Store, table: str) -> dict[str, str]:
    """Each column's type, LowCardinality taken off (a storage choice: the values are the same)."""
    rows = store.query("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                       "AND table = {t:String}", {"t": table}).rows
    return {name: type_.removeprefix("LowCardinality(").removesuffix(")") if type_.startswith("LowCardinality(")
            else type_ for name, type_ in rows}


def store_checked(store: Store, table: str, model: type[BaseModel], data: pa.Table) -> None:
    """Insert ``data`` into ``table`` after checking the table has a column for each; else fail naming them."""
    have = table_types(store, table)
    nullable = {s.name: s.nullable for s in field_shapes(model)}
    missing = [name for name in data.column_names if name not in have]
    ddl = "; ".join(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} "
                    f"{clickhouse_type(data.schema.field(name).type, nullable=nullable.get(name, True))}"
                    for name in missing)
    assert not missing, f"{table} has no column for {model.__name__} field(s) {', '.join(missing)}; migrate: {ddl}"
    store.insert_arrow(table, data)


def read_back(store: Store, table: str, key: str, sent: list[BaseModel]) -> None:
    """Every field of every ``sent`` record equals its stored value: in its column, or in ``extra``."""
    ids = ", ".join(f"'{getattr(record, key)}'" for record in sent)
    stored = store.query_arrow(f"SELECT * FROM {table} FINAL WHERE {key} IN ({ids})").to_pylist()
    rows = {row[key]: row for row in stored}
    problems = []
    for record in sent:
        row = rows.get(getattr(record, key))
        if row is None:
            problems.append(f"{key} {getattr(record, key)!r}: not stored")
            continue
        problems += [f"{getattr(record, key)}: {p}" for p in differences(record, row, table)]
    assert not problems, f"{table}:\n" + "\n".join(problems)


def differences(sent: BaseModel, row: Mapping[str, Any], table: str) -> list[str]:
    extra = orjson.loads(row["extra"]) if row.get("extra") else {}
    problems = []
    for shape in field_shapes(type(sent)):
        if shape.constant:
            continue  # one value per contract version: there is nothing to store
        want = getattr(sent, shape.name)
        if want is None and shape.name in FILLED.get(table, {}):
            want = getattr(sent, FILLED[table][shape.name])
        if shape.name not in row:
            problems.append(f"field {shape.name}: sent {want!r}, but {table} has no column for it")
        elif _comparable(row[shape.name]) != _comparable(want):
            problems.append(f"field {shape.name}: sent {want!r}, stored {row[shape.name]!r}")
    for name, want in (sent.__pydantic_extra__ or {}).items():
        if extra.get(name) != want:
            problems.append(f"field {name} (unknown to the contract): sent {want!r}, extra holds {extra.get(name)!r}")
    return problems


def _comparable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).replace(microsecond=value.microsecond // 1000 * 1000)
    if isinstance(value, list) and all(isinstance(v, tuple) for v in value):  # a Map as Arrow returns it
        return dict(value)
    return value


def emitted(bootstrap: str, topic: str, records: list[BaseModel], *, expect: int) -> list[SourceRecord]:
    """``records`` through a real Emitter and broker, as the consumer sees them."""
    with Emitter(bootstrap_servers=bootstrap, topic=topic, ledger_topic=None, register_atexit=False,
                 debug=True) as emitter:
        assert all(emitter.emit(record) for record in records)
        assert emitter.flush(30), emitter.stats()
    values = consume_all(bootstrap, topic, expect=expect)
    assert len(values) == expect, f"{len(values)} records on {topic}, expected {expect}"
    return [SourceRecord(topic, 0, offset, value) for offset, value in enumerate(values)]


def check_usage(store: Store, bootstrap: str, topic: str) -> None:
    """A UsageEvent with every field set, one with only the required ones (both in a block: the fast path),
    and one with fields the contract does not know (a JSON row: pydantic), from emit() to usage_events."""
    run = uuid.uuid4().hex[:12]
    values = full_values(UsageEvent, run, TOKENS | PATTERNED)
    full = UsageEvent(**values)
    sparse = bare(UsageEvent, values, WIRE_REQUIRED, event_id=f"bare-{run}")
    unknown = UsageEvent(**values | {"event_id": f"unknown-{run}", "zone_hint": "eu-west-1", "nested": {"a": [1, 2]}})
    records = emitted(bootstrap, topic, [full, sparse, unknown], expect=2)
    [block] = [record.value for record in records if record.value.startswith(b'{"block"')]
    try:  # the fast path must carry every field itself, not leave the block to pydantic
        block_columns(block, earliest=EARLIEST_TS, latest=datetime.now(timezone.utc) + timedelta(days=1))
    except NotFast as exc:
        raise AssertionError(f"the emitter's block of UsageEvents cannot take the fast path: {exc}") from None
    batch = process(records, Pricer())
    assert batch.dead_letters == [], [d.reason for d in batch.dead_letters]
    store_checked(store, "usage_events", UsageEvent, usage_table(batch))
    read_back(store, "usage_events", "event_id", [full, sparse, unknown])


def check_gpu(store: Store, bootstrap: str, topic: str) -> None:
    """A GpuSample with every field set and one with only the required ones, from emit() to gpu_samples."""
    run = uuid.uuid4().hex[:12]
    values = full_values(GpuSample, run)
    samples = [GpuSample(**values), bare(GpuSample, values, GPU_WIRE_REQUIRED, sample_id=f"bare-{run}")]
    batch = process_gpu(emitted(bootstrap, topic, samples, expect=1))
    assert batch.dead_letters == [], [d.reason for d in batch.dead_letters]
    store_checked(store, "gpu_samples", GpuSample, gpu_sample_table(batch.samples))
    read_back(store, "gpu_samples", "sample_id", samples)


def check_ledger(store: Store) -> None:
    """A LedgerEntry with every field set and one with only the required ones, from a record to emitter_ledger."""
    run = uuid.uuid4().hex[:12]
    values = full_values(LedgerEntry, run)
    entries = [LedgerEntry(**values), bare(LedgerEntry, values, LEDGER_WIRE_REQUIRED, emitter_id=f"bare-{run}")]
    record = SourceRecord("ledger", 0, 0, b"[" + b",".join(encode_event(e) for e in entries) + b"]")
    batch = process_ledger([record])
    assert batch.dead_letters == [], [d.reason for d in batch.dead_letters]
    store_checked(store, "emitter_ledger", LedgerEntry, ledger_table(batch.entries))
    read_back(store, "emitter_ledger", "emitter_id", entries)


# -- from emit() to the tables ---------------------------------------------------------------------

@pytest.mark.integration
def test_every_usage_event_field_travels_from_emit_to_usage_events(broker: str, topic: str, embedded_store) -> None:
    check_usage(embedded_store, broker, topic)


@pytest.mark.integration
def test_every_gpu_sample_field_travels_from_emit_to_gpu_samples(broker: str, topic: str, embedded_store) -> None:
    check_gpu(embedded_store, broker, f"{topic}.gpu")


def test_every_ledger_entry_field_travels_to_emitter_ledger(embedded_store) -> None:
    check_ledger(embedded_store)


def test_a_gpu_sample_field_the_version_does_not_know_is_kept(embedded_store) -> None:
    sample = GpuSample(**full_values(GpuSample, uuid.uuid4().hex[:12]) | {"fan_rpm": 1200.0})
    batch = process_gpu([SourceRecord("gpu", 0, 0, encode_event(sample))])
    store_checked(embedded_store, "gpu_samples", GpuSample, gpu_sample_table(batch.samples))
    read_back(embedded_store, "gpu_samples", "sample_id", [sample])


@pytest.mark.integration
def test_a_field_added_to_a_contract_without_a_column_fails_naming_it(broker: str, topic: str, tmp_path: Path) -> None:
    """The checks above, where each contract has fields more than its table: each fails, naming them.

    With the columns the failure names added (as the next migration would), the same
    checks pass: new fields of every kind travel from emit() to the table, the block
    decoder's fast path included.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "-c", MUTANT, broker, str(tmp_path / "chdb"), topic], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    outcome = dict(line.split(" ", 1) for line in run.stdout.splitlines()
                   if line.startswith(("usage", "gpu", "ledger")))
    assert outcome.keys() == {"usage", "gpu", "ledger", "usage+columns", "gpu+columns", "ledger+columns"}, run.stdout
    usage_fields = "zone, answered_at, labels, retries, price_hint, cached, tier"
    for check, table, model, field in (("usage", "usage_events", "UsageEvent", usage_fields),
                                       ("gpu", "gpu_samples", "GpuSample", "fan_rpm"),
                                       ("ledger", "emitter_ledger", "LedgerEntry", "dropped")):
        expected = f"failed: {table} has no column for {model} field(s) {field}; migrate: ALTER TABLE {table} ADD"
        assert outcome[check].startswith(expected), outcome[check]
        assert outcome[f"{check}+columns"] == "passed", outcome[f"{check}+columns"]


# The child process of the test above: a field is added to each contract before anything of the
# pipeline is imported, as if it had been written into the contract's module.
MUTANT = """
import sys
from pathlib import Path

from typing import Literal

from pydantic import AwareDatetime, Field, create_model

import spendstream.schemas as schemas
from spendstream.schemas import _types, gpu, ledger, usage

usage.UsageEvent = schemas.UsageEvent = create_model(
    "UsageEvent", __base__=usage.UsageEvent, zone=(_types.Label, None),
    answered_at=(AwareDatetime | None, None), labels=(dict[str, str], Field(default_factory=dict, max_length=4)),
    retries=(int, Field(default=0, ge=0, le=9, strict=True)), price_hint=(float | None, Field(default=None, gt=0)),
    cached=(bool, False), tier=(Literal["a", "b"], "a"))
gpu.GpuSample = schemas.GpuSample = create_model(
    "GpuSample", __base__=gpu.GpuSample, fan_rpm=(float | None, Field(default=None, ge=0)))
ledger.LedgerEntry = schemas.LedgerEntry = create_model(
    "LedgerEntry", __base__=ledger.LedgerEntry, dropped=(int, Field(default=0, ge=0, strict=True)))

from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.migrations import migrate
from tests import test_one_shape as shape

bootstrap, data_dir, topic = sys.argv[1:4]
store = EmbeddedStore(Path(data_dir))
migrate(store)
checks = {"usage": lambda topic: shape.check_usage(store, bootstrap, topic),
          "gpu": lambda topic: shape.check_gpu(store, bootstrap, topic + ".gpu"),
          "ledger": lambda topic: shape.check_ledger(store)}
for name, check in checks.items():
    try:
        check(topic)
    except AssertionError as exc:
        print(name, "failed:", " ".join(str(exc).split()))
        # Then as a new migration would: with the columns the failure asked for, the same check passes.
        for statement in str(exc).split("; migrate: ", 1)[-1].split("; "):
            store.command(statement)
        try:
            check(topic + ".migrated")
        except AssertionError as exc:
            print(name + "+columns", "failed:", " ".join(str(exc).split()))
        else:
            print(name + "+columns", "passed")
    else:
        print(name, "passed")
store.close()
"""


# -- the tables the migrations made ----------------------------------------------------------------

@pytest.mark.parametrize(("table", "model", "columns"), [("usage_events", UsageEvent, EVENT_COLUMNS),
                                                          ("gpu_samples", GpuSample, GPU_COLUMNS),
                                                          ("emitter_ledger", LedgerEntry, LEDGER_COLUMNS)])
def test_every_contract_column_has_a_column_of_its_type_in_the_migrated_table(
        embedded_store, table: str, model: type[BaseModel], columns: list[tuple[str, pa.DataType]]) -> None:
    """Every field but a constant one, those stored elsewhere in the pipeline (tags) included."""
    have = table_types(embedded_store, table)
    nullable = {s.name: s.nullable for s in field_shapes(model)}
    wrong = []
    for name, type_ in (dict(contract_columns(model)) | dict(columns)).items():
        want, got = clickhouse_type(type_, nullable=nullable.get(name, False)), have.get(name)
        if got in (want, f"Nullable({want})"):
            continue  # a column may hold NULL where the contract never sends one
        if name in FILLED.get(table, {}) and want == f"Nullable({got})":
            continue  # the pipeline fills it
        wrong.append(f"{name}: the contract needs {want}, {table} has {got or 'no such column'}")
    assert not wrong, f"{table} does not fit {model.__name__}: " + "; ".join(wrong)
