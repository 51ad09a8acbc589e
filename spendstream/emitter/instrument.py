"""Zero-code metering of an ``openai`` or ``anthropic`` client: every HTTP attempt of every model call is an event.

    from openai import OpenAI
    from spendstream.emitter import Emitter, instrument

    client = instrument(OpenAI(), team="search", feature="answers", emitter=Emitter(bootstrap_servers="kafka:9092"))

The client keeps its type and its API. Chat Completions, Responses, Completions and
Embeddings (OpenAI, Azure OpenAI) and Messages (Anthropic), sync and async, streamed
or not, are metered; other endpoints pass through untouched. Two hooks do it:

- the client's ``request`` method, which every endpoint goes through, opens one
  *call* (a ``request_id``) around the SDK's own retry loop, and closes it when the
  response is parsed or the stream ends;
- the ``send`` method of the client's HTTP client (httpx), which the SDK's retry loop
  calls once per HTTP attempt, records each attempt's start, HTTP status, or timeout
  (a response hook of httpx could not see timeouts and connection errors).

A call becomes one UsageEvent per attempt: ``attempt`` counts up within the
``request_id``; failed attempts carry ``status`` (``rate_limited`` for 429,
``timeout``, ``error``) and ``http_status``; the last one carries the usage the
provider reported (streams too: for Chat Completions and Completions streams
``stream_options={"include_usage": True}`` is added unless the caller set
``stream_options``), the model and service tier actually served, latency and, for
streams, time to first token. A stream that ends without usage is counted locally
(:mod:`spendstream.emitter.estimate`, ``tokens_estimated``). A prompt-prefix
fingerprint (of the system/developer prompt, ``instructions`` or ``system``) is added
only with ``fingerprint_prefix=True``.

The caller's call is never changed otherwise, never delayed by network I/O (``emit()``
only queues) and never sees an exception of ours: a failure of the instrumentation is
counted in :meth:`Instrumentation.stats` and logged at most once a minute. (The first
local estimate in a process reads the bundled vocabulary from disk, a few hundred ms once.)
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from typing import Any, Protocol

from spendstream.emitter.call import Call, status_of_exception
from spendstream.emitter.estimate import estimate_usage
from spendstream.emitter.hooks import observe_stream, wrap_request, wrap_send
from spendstream.emitter.prefix import prefix_fields
from spendstream.emitter.responses import (
    TOKEN_FIELDS,
    StreamTally,
    prompt_of,
    requested_max_tokens,
    system_prefix,
    text_of,
    usage_fields,
)
from spendstream.schemas.usage import UsageEvent

__all__ = ["Instrumentation", "Sink", "instrument", "instrumentation_of"]

log = logging.getLogger(__name__)
_METERED_PATHS = ("/chat/completions", "/completions", "/responses", "/embeddings", "/messages")
_LOG_EVERY_S = 60.0


class Sink(Protocol):
    """Where events go: an :class:`~spendstream.emitter.Emitter`, or anything with its ``emit``."""

    def emit(self, event: UsageEvent) -> bool: ...


def instrument(client: Any, *, team: str | None = None, feature: str | None = None, customer: str | None = None,
               environment: str | None = None, user_hash: str | None = None, tags: dict[str, str] | None = None,
               service: str | None = None, deployment: str | None = None, provider: str | None = None,
               fingerprint_prefix: bool = False, emitter: Sink | None = None) -> Any:
    """Meter every model call ``client`` makes; returns the same client.

    ``client``: an ``openai`` (``OpenAI``, ``AsyncOpenAI``, ``AzureOpenAI``, …) or
    ``anthropic`` (``Anthropic``, ``AsyncAnthropic``, …) client. Attribution fields go on
    every event. ``provider`` defaults from the client (``openai``, ``azure``,
    ``anthropic``, ``bedrock``, ``google``). ``emitter``: where events go; by default one
    process-wide Emitter for ``SPENDSTREAM_KAFKA_BOOTSTRAP`` (and ``SPENDSTREAM_USAGE_TOPIC``).

    Raises at once (not on a later call) when the client is of neither SDK, an
    attribution field is invalid, or there is no emitter. Instrumenting a client again
    replaces its settings. Copies made later with ``client.with_options()`` are not
    instrumented: instrument them too.
    """
    api = _api_of(client)
    base = {"team": team, "feature": feature, "customer": customer, "environment": environment,
            "user_hash": user_hash, "tags": dict(tags or {}), "service": service, "deployment": deployment,
            "provider": provider or _provider_of(client, api)}
    UsageEvent(model="check", **base)  # invalid attribution fails here, at setup, with the field named
    sink = emitter if emitter is not None else default_emitter()
    client._spendstream = Instrumentation(api=api, base_fields=base, emitter=sink,
                                          fingerprint_prefix=fingerprint_prefix)
    wrap_request(client)
    http_client = getattr(client, "_client", None)  # the SDK's httpx client (Stainless SDKs keep it here)
    if callable(getattr(http_client, "send", None)):
        wrap_send(http_client)
    return client


def instrumentation_of(client: Any) -> Instrumentation | None:
    """The instrumentation of a client :func:`instrument` returned (for its ``stats()``), else None."""
    return getattr(client, "_spendstream", None)


class Instrumentation:
    """The settings and counters of one instrumented client; turns finished calls into events."""

    def __init__(self, *, api: str, base_fields: dict[str, Any], emitter: Sink, fingerprint_prefix: bool) -> None:
        self.api = api
        self.base_fields = base_fields
        self.emitter = emitter
        self.fingerprint_prefix = fingerprint_prefix
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._last_log: dict[str, float] = {}

    def stats(self) -> dict[str, int]:
        """``calls`` metered; ``events_emitted`` (the emitter accepted them) and ``events_refused`` (it dropped
        them and counted why in its own stats); ``emit_errors`` (the emitter raised); ``unmetered_calls``
        (a failure of ours cost a call its events)."""
        out = dict.fromkeys(("calls", "events_emitted", "events_refused", "emit_errors", "unmetered_calls"), 0)
        with self._lock:
            out.update(self._counts)
        return out

    # -- one call: begin, then succeeded or failed ----------------------------------------------

    def begin(self, options: Any, stream: bool) -> tuple[Call | None, Any]:
        """A Call for a metered request (and its options, with usage asked for in streams), or (None, options)."""
        try:
            url, body = str(getattr(options, "url", "")), getattr(options, "json_data", None)
            if not isinstance(body, dict) or not url.rstrip("/").endswith(_METERED_PATHS):
                return None, options
            stream = bool(stream or body.get("stream"))
            if stream and self.api == "openai" and url.rstrip("/").endswith("completions") \
                    and "stream_options" not in body:
                body = {**body, "stream_options": {"include_usage": True}}
                options = options.model_copy(update={"json_data": body})
            self._count("calls")
            return Call(body=body, stream=stream), options
        except Exception as exc:
            self.failed_ourselves(exc)
            return None, options

    def succeeded(self, call: Call, result: Any) -> Any:
        """The SDK returned ``result``: emit now, or when the stream it is ends. Returns ``result``."""
        try:
            parsed = result
            if type(result).__name__ == "LegacyAPIResponse":  # with_raw_response: parse() caches what it returns,
                parsed = result.parse()                       # so the caller's own parse() gets this same object
            if call.stream:
                observe_stream(self, call, StreamTally(self.api), parsed)
            else:
                self.finish(call, final=usage_fields(self.api, parsed), text=text_of(parsed), ttft_ms=None)
        except Exception as exc:
            self.failed_ourselves(exc)
        return result

    def failed(self, call: Call, exc: BaseException) -> None:
        """The SDK raised ``exc`` (after its retries): every attempt is an event, the last one failed."""
        try:
            self.finish(call, final=None, text="", ttft_ms=None, error=exc)
        except Exception as own:
            self.failed_ourselves(own)

    def finish(self, call: Call, *, final: dict[str, Any] | None, text: str, ttft_ms: float | None,
               error: BaseException | None = None) -> None:
        """Emit one event per attempt of ``call``; the last carries ``final`` usage (else a local estimate).

        Once per call: a stream that is closed and then collected reports once.
        """
        if call.done:
            return
        call.done = True
        ended = time.perf_counter()
        model = str(call.body.get("model") or "unknown")
        common = {**self.base_fields, "request_id": call.request_id, "model": model,
                  "max_tokens": requested_max_tokens(call.body)}
        if self.fingerprint_prefix and (prefix := system_prefix(self.api, call.body)):
            common.update(prefix_fields(prefix, provider=common["provider"], model=model))
        attempts = call.attempts_or_one()
        events = [UsageEvent(**common, attempt=n, ts=a.started_wall, status=a.status, http_status=a.http_status,
                             latency_ms=a.latency_ms()) for n, a in enumerate(attempts[:-1], start=1)]
        last = attempts[-1]
        fields = {**common, "attempt": len(attempts), "ts": last.started_wall, "http_status": last.http_status,
                  "latency_ms": (ended - last.started) * 1000, "ttft_ms": ttft_ms}
        if error is not None:
            fields["status"] = last.status if last.status != "ok" else status_of_exception(error)
        if final is not None:
            fields.update(final)
        elif error is None or text:  # an answer without usage: count it here
            estimate = estimate_usage(provider=common["provider"], model=model,
                                      prompt=prompt_of(self.api, call.body), completion=text)
            fields.update({name: getattr(estimate, name) for name in (*TOKEN_FIELDS, "tokenizer")},
                          tokens_estimated=True)
        events.append(UsageEvent(**fields))
        for event in events:
            self._send(event)

    def finish_stream(self, call: Call, tally: StreamTally, error: BaseException | None) -> None:
        """A stream ended (exhausted, failed with ``error``, or closed early): emit what it reported."""
        try:
            started = call.attempts_or_one()[-1].started
            ttft_ms = (tally.first_token_at - started) * 1000 if tally.first_token_at is not None else None
            final = usage_fields(self.api, tally.final) if tally.final.get("usage") else None
            if final is None and tally.final.get("model"):
                call.body = {**call.body, "model": tally.final["model"]}
            self.finish(call, final=final, text=tally.text, ttft_ms=ttft_ms, error=error)
        except Exception as exc:
            self.failed_ourselves(exc)

    def failed_ourselves(self, exc: Exception) -> None:
        """A failure of the instrumentation itself: the call it happened in lost its events (counted)."""
        self._count("unmetered_calls", cause=exc)

    # -- internals --------------------------------------------------------------------------------

    def _send(self, event: UsageEvent) -> None:
        try:
            accepted = self.emitter.emit(event)
        except Exception as exc:  # an Emitter never raises; another sink might, and it must not reach the caller
            self._count("emit_errors", cause=exc)
            return
        self._count("events_emitted" if accepted else "events_refused")

    def _count(self, name: str, *, cause: BaseException | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            self._counts[name] += 1
            should_log = cause is not None and now - self._last_log.get(name, -_LOG_EVERY_S) >= _LOG_EVERY_S
            if should_log:
                self._last_log[name] = now
        if should_log:
            log.warning("spendstream instrumentation: %s (%s); further ones are counted in stats()",
                        name, type(cause).__name__)


def _api_of(client: Any) -> str:
    package = type(client).__module__.split(".")[0]
    if package not in ("openai", "anthropic") or not callable(getattr(client, "request", None)):
        raise TypeError(f"instrument() takes an openai or anthropic client, not {type(client).__qualname__}")
    return package


def _provider_of(client: Any, api: str) -> str:
    name = type(client).__name__.lower()
    for marker, provider in (("azure", "azure"), ("bedrock", "bedrock"), ("vertex", "google")):
        if marker in name:
            return provider
    return api


_default_lock = threading.Lock()
_default_emitter: Sink | None = None


def default_emitter() -> Sink:
    """One Emitter per process for ``SPENDSTREAM_KAFKA_BOOTSTRAP`` (topic ``SPENDSTREAM_USAGE_TOPIC``)."""
    global _default_emitter
    with _default_lock:
        if _default_emitter is None:
            bootstrap = os.environ.get("SPENDSTREAM_KAFKA_BOOTSTRAP")
            if not bootstrap:
                raise ValueError("instrument() needs somewhere to send events: pass emitter=Emitter(...) "
                                 "or set SPENDSTREAM_KAFKA_BOOTSTRAP")
            from spendstream.emitter.client import Emitter

            _default_emitter = Emitter(bootstrap_servers=bootstrap,
                                       topic=os.environ.get("SPENDSTREAM_USAGE_TOPIC", "spendstream.usage"))
        return _default_emitter
