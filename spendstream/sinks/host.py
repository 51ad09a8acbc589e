"""Sharing the embedded store between processes: ``spendstream store`` and :class:`RemoteStore`.

chdb lets one process open a data directory. To run several workers on one
machine without a ClickHouse server, one ``spendstream store`` process owns the
directory and serves it on a loopback port; workers started with
``SPENDSTREAM_STORE_URL=http://127.0.0.1:<port>`` use :class:`RemoteStore`, which
speaks the same :class:`~spendstream.sinks.store.Store` interface over HTTP.
``spendstream sql`` finds the host through ``<data_dir>/worker.json`` as it finds
a worker. Production uses a ClickHouse server instead (``SPENDSTREAM_CLICKHOUSE_URL``).

Endpoints (127.0.0.1 only; every request carries the data directory's secret, see
:mod:`spendstream.sinks.loopback`): ``POST /spendstream/query/`` (the worker's query
protocol: JSON ``{sql, params, format, write}``, one statement, read-only unless
``write``), ``POST /spendstream/insert/<table>`` (an Arrow IPC stream),
``GET /spendstream/health/``.
"""

from __future__ import annotations

import asyncio
import io
import re
import signal
from typing import Any

import pyarrow as pa
from pydantic import SecretStr

from spendstream.sinks.endpoint import (
    ARROW_STREAM_TYPE,
    QUERY_PATH,
    EndpointUnavailable,
    QueryClient,
    QueryFailed,
    serve_query,
)
from spendstream.sinks.loopback import refusal
from spendstream.sinks.store import QueryResult, Store, StoreError, arrow_table, query_result

INSERT_PATH = "/spendstream/insert/"
HEALTH_PATH = "/spendstream/health/"
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RemoteStore:
    """The Store interface, served by a ``spendstream store`` process.

    ``secret`` is the one in the host's data directory
    (:func:`~spendstream.sinks.loopback.read_secret`). A RemoteStore is the pipeline's
    store: it may write, like the embedded store it stands for.
    """

    def __init__(self, url: str, secret: SecretStr, timeout_s: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self._client = QueryClient(self.url, secret, timeout_s, write=True)

    def command(self, sql: str) -> None:
        self.query_text(sql, fmt="CSV")

    def query(self, sql: str, params: dict[str, Any] | None = None) -> QueryResult:
        return query_result(self, sql, params)

    def query_text(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact") -> str:
        return self.run_statement(sql, params, fmt, write=True).decode()

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        return arrow_table(self.run_statement(sql, params, "ArrowStream", write=True))

    def run_statement(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact", *,
                      write: bool = False) -> bytes:
        try:
            return self._client.run(sql, params, fmt, write=write)
        except (QueryFailed, EndpointUnavailable) as exc:
            raise StoreError(str(exc)) from exc

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
        try:
            self._client.post(INSERT_PATH + table, sink.getvalue(), ARROW_STREAM_TYPE)
        except (QueryFailed, EndpointUnavailable) as exc:
            raise StoreError(f"insert into {table} failed: {exc}") from exc

    def close(self) -> None:
        pass


async def serve(store: Store, port: int, stop: asyncio.Event, *, secret: SecretStr) -> None:
    """Serve ``store`` on 127.0.0.1:``port`` until ``stop`` is set, to requests carrying ``secret``."""
    from aiohttp import web

    async def query(request: web.Request) -> web.StreamResponse:
        return await serve_query(store, request, secret=secret, port=port)

    async def insert(request: web.Request) -> web.Response:
        refused = refusal(request.headers, secret=secret, port=port, content_type=ARROW_STREAM_TYPE)
        if refused is not None:
            status, reason = refused
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return web.json_response({"error": reason}, status=status, headers=headers)
        table = request.match_info["table"]
        if not _TABLE.match(table):
            return web.json_response({"error": f"bad table name {table!r}"}, status=400)
        try:
            data = pa.ipc.open_stream(await request.read()).read_all()
            await asyncio.to_thread(store.insert_arrow, table, data)
        except (pa.ArrowInvalid, StoreError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"rows": data.num_rows})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post(QUERY_PATH, query)
    app.router.add_post(INSERT_PATH + "{table}", insert)
    app.router.add_get(HEALTH_PATH, health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run_store_host(store: Store, port: int, *, secret: SecretStr) -> None:
    """Serve until SIGINT/SIGTERM."""
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(store, port, stop, secret=secret)

    asyncio.run(main())
