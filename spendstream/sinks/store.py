"""The one ClickHouse interface the pipeline writes and queries through."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

# Every table is a ReplacingMergeTree read with FINAL, so de-duplicating inside each
# inserted block as well (ClickHouse's default, optimize_on_insert=1) buys nothing and
# costs half the insert time (bench/throughput.py: 2.35 -> 1.08 µs a usage_events row).
INSERT_SETTINGS = {"optimize_on_insert": 0}


class StoreError(RuntimeError):
    """ClickHouse rejected a statement or could not be reached."""


class StoreClosed(StoreError):
    """The store is closing or closed: no statement starts any more (a worker shutting down, not a failure)."""


class StoreUnavailable(StoreError):
    """ClickHouse did not answer (refused, timed out, starting, locked by another process): worth retrying.

    A plain :class:`StoreError` means ClickHouse answered and said no (bad SQL, wrong
    credentials), which trying again will not change.
    """


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def scalar(self) -> Any:
        return self.rows[0][0]


class Store(Protocol):
    """ClickHouse, embedded or server: the same SQL on both."""

    def command(self, sql: str) -> None: ...

    def query(self, sql: str, params: dict[str, Any] | None = None) -> QueryResult: ...

    def query_text(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact") -> str: ...

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        """A SELECT's result as an Arrow table: exact decimals, no per-value parsing."""
        ...

    def run_statement(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact", *,
                      write: bool = False) -> bytes:
        """One statement from outside (a person, an endpoint), its output in ``fmt``.

        Several statements are refused before any runs. Unless ``write``, ClickHouse runs
        it read-only (``readonly=1``): writes, DDL, settings changes and table functions
        that reach files or the network are refused, raised as
        :class:`~spendstream.sinks.readonly.WriteRefused`.
        """
        ...

    def insert_arrow(self, table: str, data: pa.Table) -> None: ...

    def close(self) -> None: ...


# Exact values travel as strings in JSON output (see JSON_SETTINGS); turn them back: the type decides the
# conversion once per column, not once per value (a pass parses thousands of rows).
def _converter(ch_type: str) -> Callable[[Any], Any] | None:
    """How a value of ``ch_type`` comes out of the JSON (None: as it is)."""
    base = ch_type.removeprefix("LowCardinality(").removeprefix("Nullable(")
    if base.startswith("Decimal"):
        return Decimal
    if base.startswith(("Int", "UInt")):
        return int
    return None


def sql_time(at: datetime) -> str:
    """An instant as a ``{name:DateTime64(3, 'UTC')}`` query parameter value."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]



def sql_strings(values: Iterable[str]) -> str:
    """Strings, sorted, as an ``{name:Array(String)}`` query parameter value (ClickHouse's text form)."""
    return "[" + ",".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in sorted(values)) + "]"

def arrow_table(stream: bytes) -> pa.Table:
    """An ``ArrowStream`` result; an empty table when the result had no rows."""
    return pa.ipc.open_stream(stream).read_all() if stream else pa.table({})


def parse_json_compact(text: str) -> QueryResult:
    """Parse ClickHouse ``JSONCompact`` output (with decimals and 64-bit ints quoted)."""
    if not text.strip():
        return QueryResult([], [], [])
    doc = json.loads(text)
    columns = [m["name"] for m in doc["meta"]]
    types = [m["type"] for m in doc["meta"]]
    rows = doc["data"]
    # in place: transposing to columns and back built two more objects a value, and at tens of thousands of
    # rows (a month's chargeback, 62k) the collector's passes over them cost more than the conversions
    converted = [(i, convert) for i, t in enumerate(types) if (convert := _converter(t)) is not None]
    for row in rows:
        for i, convert in converted:
            if row[i] is not None:
                row[i] = convert(row[i])
    return QueryResult(columns, types, rows)


# Money must not pass through a float on its way out: quote decimals and big ints.
JSON_SETTINGS = {"output_format_json_quote_decimals": 1, "output_format_json_quote_64bit_integers": 1}
_SETTINGS_CLAUSE = " SETTINGS " + ", ".join(f"{k} = {v}" for k, v in JSON_SETTINGS.items())


class TextQuerier(Protocol):
    def query_text(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact") -> str: ...


class ArrowQuerier(TextQuerier, Protocol):
    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table: ...


@runtime_checkable
class SecondReader(Protocol):
    """A store that can read on a second connection while its own runs a query: for a command whose reads
    do not depend on each other (the report's tables beside its advisor's), and for long reads beside the
    pipeline's (the hourly baseline refresh beside the detection rounds), when the engine runs both at once."""

    def second_reader(self) -> AbstractContextManager[ArrowQuerier]: ...


def query_result(querier: TextQuerier, sql: str, params: dict[str, Any] | None = None) -> QueryResult:
    """Run ``sql`` (a SELECT without SETTINGS/FORMAT) and parse it exactly, through any querier:
    a store, or a running worker's query endpoint."""
    return parse_json_compact(querier.query_text(sql + _SETTINGS_CLAUSE, params, "JSONCompact"))
