"""Embedded ClickHouse: chdb in this process, persisting to a local directory."""

from __future__ import annotations

import fcntl
import io
import os
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa

from spendstream.sinks.store import (INSERT_SETTINGS, QueryResult, StoreError, StoreUnavailable, arrow_table,
                                     query_result)


class DataDirLocked(StoreUnavailable):
    """Another process holds the embedded data directory (it may be a worker that is still exiting)."""


class EmbeddedStore:
    """chdb session on ``data_dir``. One process may open a directory at a time.

    Queries from other processes go through the process that owns it (the
    worker's query endpoint); see :mod:`spendstream.agents.query_endpoint`.
    """

    def __init__(self, data_dir: Path) -> None:
        from chdb.session import Session

        self.data_dir = Path(data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the embedded ClickHouse directory {self.data_dir}: {exc}") from exc
        # chdb refuses a query while a streaming insert is open on the connection:
        # the writer thread and the query endpoint take turns.
        self._lock = threading.Lock()
        # Asked first, so that chdb is not: its refusal says only "Error initializing
        # EmbeddedServer" and writes the real reason to stderr, once per attempt.
        if locked_by_another_process(self.data_dir):
            raise self._locked()
        try:
            self._session = Session(str(self.data_dir.resolve()))
        except Exception as exc:  # chdb raises a bare RuntimeError; the real reason is on stderr
            if locked_by_another_process(self.data_dir):  # taken between our look and chdb's
                raise self._locked() from exc
            raise StoreError(f"cannot open embedded ClickHouse at {self.data_dir}: {exc}") from exc

    def _locked(self) -> DataDirLocked:
        return DataDirLocked(
            f"{self.data_dir} is open in another process (a running `spendstream up` or worker, or one still "
            "exiting?); query through it with `spendstream sql`, or stop it first"
        )

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


def locked_by_another_process(data_dir: Path) -> bool:
    """True while a ClickHouse (chdb) session holds ``data_dir``: another process's, or one
    already open in this process.

    ClickHouse holds an exclusive ``flock`` on ``<data_dir>/status`` while it runs; the
    kernel drops it when the process exits, even after kill -9, so a leftover file
    from a crash does not count. Only a look: the lock is released at once.
    """
    try:
        fd = os.open(Path(data_dir) / "status", os.O_RDONLY)
    except OSError:
        return False  # absent (a clean shutdown, or never opened) or unreadable: chdb will say why
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also releases our lock, if we got it
    return False


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
