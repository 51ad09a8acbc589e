"""The worker's loopback query endpoint, and its client.

chdb lets one process open a data directory, and the worker is that process;
``spendstream sql`` in another terminal asks the worker over HTTP instead of
opening the directory. The endpoint binds to 127.0.0.1 only; its address is
written to ``<data_dir>/worker.json`` while the worker runs, and every request
must carry the secret in ``<data_dir>/worker.secret``
(:mod:`spendstream.sinks.loopback`).

Protocol: ``POST /spendstream/query/`` with ``Content-Type: application/json`` and
``{"sql": …, "params": {…}, "format": …, "write": false}``. The statement runs through
:meth:`~spendstream.sinks.store.Store.run_statement`: one statement, read-only as
ClickHouse enforces it unless ``write`` is true. The answer is the output in the
format asked for, or ``{"error": …}`` with status 400 (401/403/415 for who asked).
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from spendstream.sinks.loopback import auth_headers, read_secret, refusal

ENDPOINT_FILE = "worker.json"
QUERY_PATH = "/spendstream/query/"
JSON_TYPE = "application/json"
ARROW_STREAM_TYPE = "application/vnd.apache.arrow.stream"


class EndpointUnavailable(RuntimeError):
    """No running worker answers for this data directory."""


class QueryFailed(RuntimeError):
    """The endpoint answered with an error: ClickHouse rejected the statement, or the request was refused."""


def write_endpoint_file(data_dir: Path, url: str) -> Path:
    """Where the endpoint listens (no secret inside: that is ``worker.secret``, mode 0600)."""
    path = Path(data_dir) / ENDPOINT_FILE
    path.write_text(json.dumps({"pid": os.getpid(), "url": url}), encoding="utf-8")
    return path


def remove_endpoint_file(data_dir: Path) -> None:
    path = Path(data_dir) / ENDPOINT_FILE
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True, slots=True)
class QueryClient:
    """Asks a running worker (or ``spendstream store``) to run statements against the data directory it owns.

    ``write`` is the default for :meth:`query_text`: False runs statements read-only,
    as ClickHouse enforces it; the owner's own programs may pass True.
    """

    url: str
    secret: SecretStr = field(repr=False)
    timeout_s: float = 60.0
    write: bool = False

    @classmethod
    def for_data_dir(cls, data_dir: Path, *, write: bool = False, timeout_s: float = 60.0) -> QueryClient | None:
        """The client for the worker owning ``data_dir``, or None if no worker runs there.

        Raises :class:`~spendstream.sinks.loopback.SecretUnreadable` when a worker runs
        but its secret cannot be read (another user's directory, or a file others can read).
        """
        try:
            info = json.loads((Path(data_dir) / ENDPOINT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not _pid_alive(int(info.get("pid", 0))):
            return None
        return cls(info["url"], read_secret(data_dir), timeout_s, write)

    def query_text(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact",
                   *, write: bool | None = None) -> str:
        """Run one statement in the worker; ``write`` (default: the client's) allows changes."""
        return self.run(sql, params, fmt, write=write).decode()

    def run(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact",
            *, write: bool | None = None) -> bytes:
        """As :meth:`query_text`, the output as bytes (binary formats such as ArrowStream)."""
        body = json.dumps({"sql": sql, "params": params or {}, "format": fmt,
                           "write": self.write if write is None else write}).encode()
        return self.post(QUERY_PATH, body, JSON_TYPE)

    def post(self, path: str, body: bytes, content_type: str) -> bytes:
        """POST ``body`` with the secret; QueryFailed with the endpoint's reason, EndpointUnavailable if none."""
        request = urllib.request.Request(self.url + path, data=body, method="POST",
                                         headers={"Content-Type": content_type, **auth_headers(self.secret)})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except (ValueError, AttributeError):
                pass
            raise QueryFailed(detail) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise EndpointUnavailable(f"the worker at {self.url} did not answer: {exc}") from exc


async def serve_query(store: Any, request: Any, *, secret: SecretStr, port: int) -> Any:
    """Answer one aiohttp request of the query protocol (the worker's view and ``spendstream store``)."""
    from aiohttp import web

    from spendstream.sinks.store import StoreError

    refused = refusal(request.headers, secret=secret, port=port, content_type=JSON_TYPE)
    if refused is not None:
        status, reason = refused
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return web.json_response({"error": reason}, status=status, headers=headers)
    try:
        body = json.loads(await request.read())
        sql, params, fmt = body["sql"], body.get("params") or {}, body.get("format", "PrettyCompact")
        write = body.get("write", False)
        if not (isinstance(sql, str) and isinstance(params, dict) and isinstance(fmt, str)
                and isinstance(write, bool)):
            raise TypeError
    except (ValueError, KeyError, TypeError, AttributeError):
        return web.json_response({"error": 'expected JSON {"sql": "…", "params": {…}, "format": "…", '
                                           '"write": false}'}, status=400)
    try:
        output = await asyncio.to_thread(store.run_statement, sql, params, fmt, write=write)
    except StoreError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    if fmt == "ArrowStream":
        return web.Response(body=output, content_type=ARROW_STREAM_TYPE)
    return web.Response(body=output, content_type="text/plain", charset="utf-8")
