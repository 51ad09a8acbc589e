"""Embedded ClickHouse: chdb in this process, persisting to a local directory."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa

from spendstream.sinks.store import INSERT_SETTINGS, QueryResult, StoreError, arrow_table, query_result


class DataDirLocked(StoreError):
    """Another process holds the embedded data directory."""


class EmbeddedStore:
    """chdb session on ``data_dir``. One process may open a directory at a time.

    Queries from other processes go through the process that owns it (the
    worker's query endpoint); see :mod:`spendstream.agents.query_endpoint`.
    """

    def __init__(self, data_dir: Path) -> None:
        from chdb.session import Session

        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # chdb refuses a query while a streaming insert is open on the connection:
        # the writer thread and the query endpoint take turns.
        self._lock = threading.Lock()
        try:
            self._session = Session(str(self.data_dir.resolve()))
        except Exception as exc:  # chdb raises a bare RuntimeError; the real reason is on stderr
            if "lock" in str(exc).lower() or "status" in str(exc).lower():
                raise DataDirLocked(
                    f"{self.data_dir} is open in another process (a running `spendstream up` or worker?); "
                    "query through it with `spendstream sql`, or stop it first"
                ) from exc
            raise StoreError(f"cannot open embedded ClickHouse at {self.data_dir}: {exc}") from exc

    def command(self, sql: str) -> None:
        self._run(sql, "CSV", None)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> QueryResult:
        return query_result(self, sql, params)

    def query_text(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact") -> str:
        return self._run(sql, fmt, params).decode()

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        return arrow_table(self._run(sql, "ArrowStream", params))

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        columns = ", ".join(f"`{name}`" for name in data.column_names)
        settings = ", ".join(f"{name}={value}" for name, value in INSERT_SETTINGS.items())
        sql = f"INSERT INTO {table} ({columns}) SETTINGS {settings}"
        try:
            with self._lock, self._session.send_insert(sql, "ArrowStream") as inserter:
                # The stream goes over as it is written, a few MB at a time, instead of
                # being built whole first (a 100k-event batch is ~60 MB of Arrow IPC).
                appender = _Appender(inserter)
                with pa.ipc.new_stream(appender, data.schema) as writer:
                    writer.write_table(data, max_chunksize=_CHUNK_ROWS)
                appender.flush()
                inserter.finish()
        except Exception as exc:  # chdb's own error types vary by version
            raise StoreError(f"insert into {table} failed: {exc}") from exc

    def close(self) -> None:
        self._session.close()

    def _run(self, sql: str, fmt: str, params: dict[str, Any] | None) -> bytes:
        try:
            with self._lock:
                result = self._session.query(sql, fmt, params=params or None)
        except Exception as exc:  # chdb's own error types vary by version
            raise StoreError(str(exc)) from exc
        return result.bytes() if hasattr(result, "bytes") else str(result).encode()


_CHUNK_ROWS = 16_384
_APPEND_BYTES = 8 * 1024 * 1024


class _Appender(io.RawIOBase):
    """A write-only file that hands what is written to a chdb streaming insert, ~8 MB at a time."""

    def __init__(self, inserter: Any) -> None:
        self._inserter = inserter
        self._pending = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._pending += data
        if len(self._pending) >= _APPEND_BYTES:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._pending:
            self._inserter.append(bytes(self._pending))
            self._pending.clear()
