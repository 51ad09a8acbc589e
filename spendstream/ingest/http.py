"""``spendstream ingest``: POST /v1/usage for services that cannot run a Kafka producer.

A request carries one UsageEvent (a JSON object) or many (a JSON array). Each event is
validated exactly as a worker validates it (agents/stages.py); the valid ones are
produced to the usage topic, and the answer comes only once the broker acknowledged
them all (acks=all):

- 202 ``{"accepted": n, "rejected": m, "errors": [{"index": i, "reason": "..."}]}``:
  the accepted events are in Kafka; each rejected one says why (its index in the array);
- 400 the same shape when no event is valid, or ``{"error": "..."}`` when the body is
  not a JSON object or array; 401 without the token; 413 over the body limit; 415 when
  the Content-Type is not application/json;
- 503 ``{"error": "..."}`` with Retry-After when Kafka did not acknowledge in time:
  nothing is known to be stored, so send the same request again. ``event_id`` is the
  idempotency key, so events that did reach Kafka are stored once however often they come.

GET /healthz answers while the server runs (liveness); GET /readyz answers 200 while a
Kafka broker answers a metadata request, else 503 (readiness). Both give the request counts.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from spendstream.agents.stages import decode, validate
from spendstream.batches import WHOLE_RECORD, SourceRecord
from spendstream.settings import Settings
from spendstream.sinks.loopback import SecretUnreadable, browser_refusal, read_secret_file

USAGE_PATH = "/v1/usage"
JSON = "application/json"
RETRY_AFTER_S = 5
# Events of one request go in records of about this size (JSON arrays a worker reads as they are):
# well under Kafka's default 1 MB message limit, whatever the body limit is.
RECORD_TARGET_BYTES = 256 * 1024
log = logging.getLogger(__name__)


class IngestSetupError(Exception):
    """The ingest server cannot start as configured (the message says what to change)."""


@dataclass(frozen=True, slots=True)
class IngestConfig:
    bootstrap_servers: str
    topic: str
    host: str
    port: int
    token: SecretStr | None = None  # None: no authentication (loopback only, --insecure-no-auth)
    max_body_bytes: int = 1_048_576
    produce_timeout_s: float = 10.0


def config_from(settings: Settings, *, host: str | None = None, port: int | None = None,
                insecure_no_auth: bool = False) -> IngestConfig:
    """The server's configuration; :class:`IngestSetupError` when it would be unsafe or cannot work."""
    if not settings.kafka_bootstrap:
        raise IngestSetupError("set SPENDSTREAM_KAFKA_BOOTSTRAP to the Kafka the workers read")
    host = host or settings.ingest_host
    token = None if insecure_no_auth else _token(settings)
    if token is None and not insecure_no_auth:
        raise IngestSetupError("set SPENDSTREAM_INGEST_TOKEN or SPENDSTREAM_INGEST_TOKEN_FILE (a secret of 32+ "
                               "characters clients send as `Authorization: Bearer <token>`), or pass "
                               "--insecure-no-auth to serve 127.0.0.1 without one")
    if token is None and not _loopback(host):
        raise IngestSetupError(f"--insecure-no-auth serves 127.0.0.1 or ::1 only, not {host}: anyone who can "
                               "reach the port could write usage")
    return IngestConfig(bootstrap_servers=settings.kafka_bootstrap, topic=settings.usage_topic, host=host,
                        port=settings.ingest_port if port is None else port, token=token,
                        max_body_bytes=settings.ingest_max_body_bytes,
                        produce_timeout_s=settings.ingest_produce_timeout_s)


def _token(settings: Settings) -> SecretStr | None:
    if settings.ingest_token is not None and settings.ingest_token_file is not None:
        raise IngestSetupError("set SPENDSTREAM_INGEST_TOKEN or SPENDSTREAM_INGEST_TOKEN_FILE, not both")
    if settings.ingest_token_file is not None:
        try:
            return read_secret_file(settings.ingest_token_file, remedy="give it mode 0600 and 32+ characters")
        except SecretUnreadable as exc:
            raise IngestSetupError(str(exc)) from None
    token = settings.ingest_token
    if token is not None and len(token.get_secret_value().strip()) < 32:
        raise IngestSetupError("SPENDSTREAM_INGEST_TOKEN must have 32 characters at least (e.g. "
                               "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return token


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BrokerUnavailable(Exception):
    """Kafka did not acknowledge in time (will be answered 503: the client sends again)."""


class Producer:
    """One aiokafka producer, (re)started on demand: the server answers 503 while Kafka is away."""

    def __init__(self, config: IngestConfig) -> None:
        self._config = config
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def send(self, records: Sequence[bytes]) -> None:
        """Every record acknowledged by the broker within the produce timeout, else BrokerUnavailable."""
        try:
            async with asyncio.timeout(self._config.produce_timeout_s):
                producer = await self.connect()
                sent = [await producer.send(self._config.topic, record) for record in records]
                await asyncio.gather(*sent)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(f"Kafka at {self._config.bootstrap_servers} did not acknowledge within "
                                    f"{self._config.produce_timeout_s:g} s ({type(exc).__name__})") from exc

    async def connect(self) -> AIOKafkaProducer:
        """The started producer; KafkaError or OSError when the broker cannot be reached now."""
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self._config.bootstrap_servers, client_id="spendstream-ingest", acks="all",
                    request_timeout_ms=int(self._config.produce_timeout_s * 1000), linger_ms=0,
                    max_request_size=self._config.max_body_bytes + RECORD_TARGET_BYTES)
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def reachable(self) -> bool:
        """Whether a broker answers a metadata request now (readiness), within the produce timeout."""
        try:
            async with asyncio.timeout(self._config.produce_timeout_s):
                await (await self.connect()).client.fetch_all_metadata()
        except (KafkaError, OSError, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


def records(items: Sequence[Any], *, target_bytes: int = RECORD_TARGET_BYTES) -> list[bytes]:
    """The items as JSON arrays of about ``target_bytes`` each (one item may exceed it alone)."""
    out: list[bytes] = []
    part: list[bytes] = []
    size = 0
    for item in items:
        encoded = orjson.dumps(item)
        if part and size + len(encoded) > target_bytes:
            out.append(b"[" + b",".join(part) + b"]")
            part, size = [], 0
        part.append(encoded)
        size += len(encoded) + 1
    if part:
        out.append(b"[" + b",".join(part) + b"]")
    return out


def create_app(config: IngestConfig) -> web.Application:
    """The aiohttp application: POST /v1/usage, GET /healthz and /readyz."""
    producer = Producer(config)
    counts: Counter[str] = Counter()  # requests by answer, and events accepted/rejected

    async def usage(request: web.Request) -> web.Response:
        refused = _refusal(request, config)
        if refused is None and request.content_length is not None and request.content_length > config.max_body_bytes:
            refused = 413, f"request body over {config.max_body_bytes} bytes (SPENDSTREAM_INGEST_MAX_BODY_BYTES)"
        if refused is not None:
            counts[f"http_{refused[0]}"] += 1
            return _json({"error": refused[1]}, status=refused[0])
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            counts["http_413"] += 1
            return _json({"error": f"request body over {config.max_body_bytes} bytes "
                                   "(SPENDSTREAM_INGEST_MAX_BODY_BYTES)"}, status=413)
        record = SourceRecord(config.topic, 0, 0, body)
        items, dead = decode(record)
        if dead:
            counts["http_400"] += 1
            return _json({"error": "request body: " + dead[0].reason}, status=400)
        _, dead = validate(record, items)
        errors = sorted(((d.item_index, d.reason) for d in dead), key=lambda e: e[0])
        bad = {index for index, _ in errors}
        valid = [item for index, item in items if index not in bad]
        answer = {"accepted": len(valid), "rejected": len(errors),
                  "errors": [{"index": index if index != WHOLE_RECORD else None, "reason": reason}
                             for index, reason in errors]}
        if not valid:
            counts["http_400"] += 1
            counts["events_rejected"] += len(errors)
            return _json(answer, status=400)
        try:
            await producer.send(records(valid))
        except BrokerUnavailable as exc:
            counts["http_503"] += 1
            log.warning("answered 503: %s", exc)
            return _json({"error": f"{exc}; nothing of this request is known to be stored: send it again"},
                         status=503, headers={"Retry-After": str(RETRY_AFTER_S)})
        counts["http_202"] += 1
        counts["events_accepted"] += len(valid)
        counts["events_rejected"] += len(errors)
        return _json(answer, status=202)

    async def healthz(request: web.Request) -> web.Response:
        return _json({"counts": dict(counts)})

    async def readyz(request: web.Request) -> web.Response:
        ready = await producer.reachable()
        return _json({"kafka_reachable": ready, "counts": dict(counts)}, status=200 if ready else 503)

    async def close_producer(app: web.Application) -> None:
        await producer.close()

    app = web.Application(client_max_size=config.max_body_bytes)
    app.router.add_post(USAGE_PATH, usage)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.on_cleanup.append(close_producer)
    return app


def _refusal(request: web.Request, config: IngestConfig) -> tuple[int, str] | None:
    """Why a request must not be served (status, reason), or None. Reasons never echo what was sent."""
    if config.token is None:
        # No token (loopback only): still refuse what a web page in a local browser could send.
        port = request.transport.get_extra_info("sockname")[1] if request.transport else config.port
        if (refused := browser_refusal(request.headers, port=port)) is not None:
            return refused
    else:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        expected = config.token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
            return 401, "refused: send Authorization: Bearer <the ingest token>"
    if request.content_type != JSON:
        return 415, f"refused: the Content-Type must be {JSON}"
    return None


def _json(body: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON, headers=headers)


def serve(config: IngestConfig, *, on_listening: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM. ``on_listening`` gets the base URL once the port is bound."""
    async def run() -> None:
        # No access log: a line per request is noise at event rates; /healthz has the counts by answer.
        runner = web.AppRunner(create_app(config), handle_signals=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise IngestSetupError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from None
        port = runner.addresses[0][1]
        host = f"[{config.host}]" if ":" in config.host else config.host
        if on_listening is not None:
            on_listening(f"http://{host}:{port}")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    except (KeyboardInterrupt, web.GracefulExit):
        pass
