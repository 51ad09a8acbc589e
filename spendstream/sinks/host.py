"""Sharing the embedded store between processes: ``spendstream store`` and :class:`RemoteStore`.

chdb lets one process open a data directory. To run several workers on one
machine without a ClickHouse server, one ``spendstream store`` process owns the
directory and serves it on a loopback port; workers started with
``SPENDSTREAM_STORE_URL=http://127.0.0.1:<port>`` use :class:`RemoteStore`, which
speaks the same :class:`~spendstream.sinks.store.Store` interface over HTTP.
``spendstream sql`` finds the host through ``<data_dir>/worker.json`` as it finds
a worker. Production uses a ClickHouse server instead (``SPENDSTREAM_CLICKHOUSE_URL``).

Endpoints (127.0.0.1 only): ``POST /spendstream/query/`` (the worker's query
protocol: JSON ``{sql, params, format, write}``, one statement, read-only unless ``write``),
``POST /spendstream/insert/<table>`` (an Arrow IPC stream), ``GET /spendstream/health/``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import signal
import urllib.error
import urllib.request
from typing import Any

import pyarrow as pa

from spendstream.agents.query_endpoint import QUERY_PATH, QueryClient, QueryFailed, EndpointUnavailable
from spendstream.sinks.store import QueryResult, Store, StoreError, arrow_table, query_result

log = logging.getLogger(__name__)

INSERT_PATH = "/spendstream/insert/"
HEALTH_PATH = "/spendstream/health/"
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RemoteStore:
    """The Store interface, served by a ``spendstream store`` process."""

    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self._client = QueryClient(self.url, timeout_s)
        self._timeout_s = timeout_s

    def command(self, sql: str) -> None:
        self.query_text(sql, fmt="CSV")

    def query(self, sql: str, params: dict[str, Any] | None = None) -> QueryResult:
        return query_result(self, sql, params)

    def query_text(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact") -> str:
        try:
            return self._client.query_text(sql, params, fmt, write=True)
        except (QueryFailed, EndpointUnavailable) as exc:
            raise StoreError(str(exc)) from exc

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        return arrow_table(self.run_statement(sql, params, "ArrowStream", write=True))

    def run_statement(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact", *,
                      write: bool = False) -> bytes:
        body = json.dumps({"sql": sql, "params": params or {}, "format": fmt, "write": write}).encode()
        return self._post(QUERY_PATH, body, "application/json")

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
        self._post(INSERT_PATH + table, sink.getvalue(), "application/vnd.apache.arrow.stream")

    def close(self) -> None:
        pass

    def _post(self, path: str, body: bytes, content_type: str) -> bytes:
        request = urllib.request.Request(self.url + path, data=body, method="POST",
                                         headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            raise StoreError(exc.read().decode(errors="replace")) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise StoreError(f"the store at {self.url} did not answer: {exc}") from exc


async def serve(store: Store, port: int, stop: asyncio.Event) -> None:
    """Serve ``store`` on 127.0.0.1:``port`` until ``stop`` is set."""
    from aiohttp import web

    async def query(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            sql, params, fmt = body["sql"], body.get("params") or {}, body.get("format", "PrettyCompact")
            write = body.get("write") is True
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": 'expected JSON {"sql": …, "params": {…}, "format": …}'}, status=400)
        try:
            output = await asyncio.to_thread(store.run_statement, sql, params, fmt, write=write)
        except StoreError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if fmt == "ArrowStream":
            return web.Response(body=output, content_type="application/vnd.apache.arrow.stream")
        return web.Response(text=output.decode())

    async def insert(request: web.Request) -> web.Response:
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


def run_store_host(store: Store, port: int) -> None:
    """Serve until SIGINT/SIGTERM."""
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(store, port, stop)

    asyncio.run(main())
