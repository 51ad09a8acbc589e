"""The worker's loopback query endpoint.

chdb lets one process open a data directory, and the worker is that process;
``spendstream sql`` in another terminal asks the worker over HTTP instead of
opening the directory. The endpoint binds to 127.0.0.1 only; its address is
written to ``<data_dir>/worker.json`` while the worker runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENDPOINT_FILE = "worker.json"
QUERY_PATH = "/spendstream/query/"


class EndpointUnavailable(RuntimeError):
    """No running worker answers for this data directory."""


def write_endpoint_file(data_dir: Path, url: str) -> Path:
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
    """Asks a running worker to run a statement against the data directory it owns.

    ``write`` is the default for :meth:`query_text`: False runs statements read-only,
    as ClickHouse enforces it; the owner's own programs may pass True.
    """

    url: str
    timeout_s: float = 60.0
    write: bool = False

    @classmethod
    def for_data_dir(cls, data_dir: Path, *, write: bool = False) -> QueryClient | None:
        """The client for the worker owning ``data_dir``, or None if no worker runs there."""
        try:
            info = json.loads((Path(data_dir) / ENDPOINT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not _pid_alive(int(info.get("pid", 0))):
            return None
        return cls(info["url"], write=write)

    def query_text(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact",
                   *, write: bool | None = None) -> str:
        """Run one statement in the worker; ``write`` (default: the client's) allows changes."""
        write = self.write if write is None else write
        body = json.dumps({"sql": sql, "params": params or {}, "format": fmt, "write": write}).encode()
        request = urllib.request.Request(self.url + QUERY_PATH, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.read().decode()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                detail = json.loads(detail).get("error", detail)
            except ValueError:
                pass
            raise QueryFailed(detail) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise EndpointUnavailable(f"the worker at {self.url} did not answer: {exc}") from exc


class QueryFailed(RuntimeError):
    """The worker ran the query and ClickHouse rejected it."""


def register(app: Any, store: Any) -> None:
    """Add the query view to a faust app's web server."""
    import faust
    from faust.web import Request, Response

    from spendstream.sinks.store import StoreError

    @app.page(QUERY_PATH)
    class QueryView(faust.web.View):
        async def post(self, request: Request) -> Response:
            try:
                body = json.loads(await request.read())
                sql, params, fmt = body["sql"], body.get("params") or {}, body.get("format", "PrettyCompact")
                write = body.get("write") is True
            except (ValueError, KeyError, TypeError):
                return self.error(400, 'expected JSON {"sql": ..., "params": {...}, "format": ..., "write": false}')
            try:
                output = await asyncio.to_thread(store.run_statement, sql, params, fmt, write=write)
            except StoreError as exc:
                return self.error(400, str(exc))
            return self.text(output.decode())
