"""The worker's operations endpoint: Prometheus metrics and Kubernetes probes on a configurable address.

    GET /metrics   the worker's metrics (agents/metrics.py), Prometheus text format
    GET /healthz   liveness: 200 while the consumer loops run; 503 once one has stopped
                   (the process cannot recover by itself: restart it)
    GET /readyz    readiness: 200 when the store answers and every consumer loop has been
                   given its partitions by the group (none is fine: a standby worker is
                   ready); 503 with what is missing otherwise

It is served apart from the faust web server on purpose: that one carries the query
endpoint and stays on 127.0.0.1 (sinks/loopback.py), while probes and scrapes come from
outside the pod. Nothing here reads or writes data beyond ``SELECT 1``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from spendstream.agents.consumer import ConsumerLoop
from spendstream.sinks.store import Store

log = logging.getLogger(__name__)

# A store that takes longer than this to answer SELECT 1 is not ready (a probe's own timeout is longer).
STORE_PING_TIMEOUT_S = 2.0


class Probes:
    """What liveness and readiness mean for one worker: its consumer loops and its store."""

    def __init__(self, loops: Sequence[ConsumerLoop], store: Store) -> None:
        self.loops, self.store = loops, store
        self._ping: asyncio.Task[None] | None = None  # one SELECT 1 at a time: a hung one is not piled on

    def dead(self) -> list[str]:
        """Why the worker should be restarted: consumer loops that started and stopped."""
        return [f"the consumer loop of {loop.topic} has stopped" for loop in self.loops if loop.stopped]

    async def not_ready(self) -> list[str]:
        """Why the worker should not count as serving yet (empty: ready)."""
        problems = [*self.dead()]
        problems += [f"{loop.topic}: no partitions assigned by the group yet" for loop in self.loops
                     if loop.assigned is None and not loop.stopped]
        if self._ping is None or self._ping.done():
            self._ping = asyncio.create_task(asyncio.to_thread(self._select_one))
        try:
            await asyncio.wait_for(asyncio.shield(self._ping), STORE_PING_TIMEOUT_S)
        except asyncio.TimeoutError:
            problems.append(f"the store did not answer SELECT 1 within {STORE_PING_TIMEOUT_S:.0f} s")
        except Exception as exc:  # noqa: BLE001 - any failure of the store is an answer: not ready
            problems.append(f"the store failed SELECT 1: {type(exc).__name__}")
        return problems

    def _select_one(self) -> None:
        self.store.query("SELECT 1")


def ops_app(registry: CollectorRegistry, probes: Probes) -> web.Application:
    """The aiohttp application serving /metrics, /healthz and /readyz."""
    async def metrics(request: web.Request) -> web.Response:
        body = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return _verdict(probes.dead(), ok="alive")

    async def readyz(request: web.Request) -> web.Response:
        return _verdict(await probes.not_ready(), ok="ready")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def _verdict(problems: list[str], *, ok: str) -> web.Response:
    status = 503 if problems else 200
    return web.Response(status=status, text=json.dumps({ok: not problems, "problems": problems}) + "\n",
                        content_type="application/json")


async def serve_ops(app: web.Application, *, host: str, port: int) -> None:
    """Serve ``app`` on ``host``:``port`` until cancelled."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("serving /metrics, /healthz and /readyz on %s:%d", host, port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
