"""Embedded ClickHouse: chdb in this process, persisting to a local directory."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from spendstream.sinks.readonly import as_write_refused, check_statement
from spendstream.sinks.store import (
    INSERT_SETTINGS,
    QueryResult,
    StoreClosed,  # raised here; defined beside StoreError so that a worker can tell it apart without chdb
    StoreError,
    StoreUnavailable,
    arrow_table,
    query_result,
)

log = logging.getLogger(__name__)
# How long closing waits for statements still running on other threads (a leader's refresh, a rollup pass).
CLOSE_WAIT_S = 20.0


class DataDirLocked(StoreUnavailable):
    """Another process holds the embedded data directory (it may be a worker that is still exiting)."""


class _Gate:
    """The statements running on any of a store's chdb sessions, and the second readers open, so that closing
    can refuse new ones and wait for these: closing chdb while another thread is inside a query crashes the process
    (SIGSEGV), and a thread still inside chdb when the interpreter exits does too."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._busy = 0  # statements running plus second readers open
        self._closing = False

    @contextmanager
    def held(self, what: str) -> Iterator[None]:
        with self._changed:
            if self._closing:
                raise StoreClosed(f"the embedded store is closing: {what} not started")
            self._busy += 1
        try:
            yield
        finally:
            with self._changed:
                self._busy -= 1
                self._changed.notify_all()

    def close(self, timeout_s: float) -> bool:
        """Refuse new statements and readers; wait up to ``timeout_s`` for the rest. True if none is left."""
        with self._changed:
            self._closing = True
            return self._changed.wait_for(lambda: self._busy == 0, timeout_s)


class EmbeddedStore:
    """chdb session on ``data_dir``. One process may open a directory at a time.

    Queries from other processes go through the process that owns it (the
    worker's query endpoint); see :mod:`spendstream.sinks.endpoint`.

    The pipeline writes and queries through one chdb session. A statement from outside
    (:meth:`run_statement`) gets a session of its own, opened for it and closed after,
    read-only unless it may write: chdb keeps settings (``readonly`` among them) per
    session, so nothing such a statement does to its session (``USE``, ``SET``, a
    failure's partial output) reaches the pipeline or the next statement. A pipeline
    query that fails replaces the pipeline's session: chdb would otherwise hand the
    failed query's partial output to the next one.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the embedded ClickHouse directory {self.data_dir}: {exc}") from exc
        self._path = str(self.data_dir.resolve())
        # chdb refuses a query while a streaming insert is open on the connection:
        # the writer thread and the query endpoint take turns.
        self._lock = threading.Lock()
        self._gate = _Gate()
        # Asked first, so that chdb is not: its refusal says only "Error initializing
        # EmbeddedServer" and writes the real reason to stderr, once per attempt.
        if locked_by_another_process(self.data_dir):
            raise self._locked()
        self._session = self._connect(self._path)

    def _connect(self, target: str) -> Any:
        try:
            from chdb.session import Session
        except ImportError as exc:  # the worker image leaves the embedded engine out
            raise StoreError("embedded ClickHouse (chdb) is not installed here: set SPENDSTREAM_CLICKHOUSE_URL to a "
                             "ClickHouse server, or pip install 'spendstream[embedded]'") from exc

        try:
            return Session(target)
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

    def run_statement(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact", *,
                      write: bool = False) -> bytes:
        """Run one statement from outside and return its output in ``fmt``.

        Refused before anything runs unless it is exactly one statement
        (:func:`~spendstream.sinks.readonly.check_statement`). Unless ``write``, its session
        is opened with ``readonly=1`` and ClickHouse refuses writes and table functions
        that reach outside (raised as WriteRefused).
        """
        with self._lock, self._gate.held("a statement"):
            session = self._connect(self._path if write else self._path + "?readonly=1")
            try:
                check_statement(sql, params, write=write, classify=partial(_classify, session),
                                run=partial(_output, session))
                return _output(session, sql, fmt, params)
            except StoreError as exc:  # also from the check: its EXPLAIN applies the statement's SETTINGS
                refusal = None if write else as_write_refused(exc)
                if refusal is None:
                    raise
                raise refusal from exc
            finally:
                session.close()

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        columns = ", ".join(f"`{name}`" for name in data.column_names)
        settings = ", ".join(f"{name}={value}" for name, value in INSERT_SETTINGS.items())
        sql = f"INSERT INTO {table} ({columns}) SETTINGS {settings}"
        with self._lock, self._gate.held(f"an insert into {table}"):
            try:
                with self._session.send_insert(sql, "ArrowStream") as inserter:
                    # The stream goes over as it is written, a few MB at a time, instead of
                    # being built whole first (a 100k-event batch is ~60 MB of Arrow IPC).
                    appender = _Appender(inserter)
                    with pa.ipc.new_stream(appender, data.schema) as writer:
                        writer.write_table(data, max_chunksize=_CHUNK_ROWS)
                    appender.flush()
                    inserter.finish()
            except Exception as exc:  # chdb's own error types vary by version
                self._session.close()  # as in _run: start the pipeline's next statement on a clean session
                self._session = self._connect(self._path)
                raise StoreError(f"insert into {table} failed: {exc}") from exc

    @contextmanager
    def second_reader(self) -> Iterator[_Reader]:
        """Reads on a chdb session of their own, which run beside this store's queries (chdb runs two sessions'
        queries at once; this store's lock takes one of its own at a time). Closed on leaving."""
        with self._gate.held("a second reader"):
            reader = _Reader(self._connect(self._path), self._gate)
            try:
                yield reader
            finally:
                reader.close()

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Refuse new statements, wait up to ``wait_s`` for the running ones and the open second readers (their
        next statement is refused), then close the session."""
        if not self._gate.close(wait_s):
            log.warning("closing the embedded store while a statement still runs after %.0f s: the process may crash "
                        "on its way out (what that statement wrote is whole or absent)", wait_s)
        with self._lock:
            self._session.close()

    def _run(self, sql: str, fmt: str, params: dict[str, Any] | None) -> bytes:
        with self._lock, self._gate.held("a statement"):
            try:
                return _output(self._session, sql, fmt, params)
            except StoreError:
                # A fresh session for the pipeline: the old one may still hold the failed query's partial output.
                self._session.close()
                self._session = self._connect(self._path)
                raise


class _Reader:
    """A chdb session for reads (:meth:`EmbeddedStore.second_reader`), one query at a time. A failed query
    ends its use: chdb may hand its partial output to the session's next query."""

    def __init__(self, session: Any, gate: _Gate) -> None:
        self._session = session
        self._gate = gate
        self._lock = threading.Lock()
        self._failed = False

    def query_text(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact") -> str:
        return self._run(sql, fmt, params).decode()

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        return arrow_table(self._run(sql, "ArrowStream", params))

    def _run(self, sql: str, fmt: str, params: dict[str, Any] | None) -> bytes:
        with self._lock, self._gate.held("a statement"):
            if self._failed:
                raise StoreError("this reader's session failed a query before: open another")
            try:
                return _output(self._session, sql, fmt, params)
            except StoreError:
                self._failed = True
                raise

    def close(self) -> None:
        self._session.close()


def _output(session: Any, sql: str, fmt: str, params: dict[str, Any] | None) -> bytes:
    try:
        result = session.query(sql, fmt, params=params or None)
    except Exception as exc:  # chdb's own error types vary by version
        raise StoreError(str(exc)) from exc
    return result.bytes() if hasattr(result, "bytes") else str(result).encode()


def _classify(session: Any, sql: str) -> tuple[str, int]:
    """chdb's classification of ``sql``: (query class, statement count), by ClickHouse's parser, nothing executed."""
    # classify_query is bound on chdb's extension connection, not on the Session wrapper;
    # chdb.durable reaches it the same way.
    try:
        report = session._conn._conn.classify_query(sql)
    except AttributeError as exc:
        raise StoreError("this chdb cannot classify statements: install chdb-core 26.7.3 or newer") from exc
    return getattr(report["query_class"], "name", str(report["query_class"])), int(report["statement_count"])


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
