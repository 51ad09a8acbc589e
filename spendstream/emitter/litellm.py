"""A LiteLLM callback: every call the LiteLLM SDK or proxy makes, and every retry of it, becomes a UsageEvent.

    # SDK
    import litellm
    from spendstream.emitter.litellm import SpendstreamLogger
    litellm.callbacks = [SpendstreamLogger(emitter=Emitter(bootstrap_servers="kafka:9092"), environment="prod")]

    # proxy (config.yaml), with SPENDSTREAM_KAFKA_BOOTSTRAP set
    litellm_settings:
      callbacks: spendstream.emitter.litellm.proxy_handler

Needs ``pip install 'spendstream[litellm]'``. The event is read from LiteLLM's
``standard_logging_object`` (its StandardLoggingPayload) by :func:`event_from_payload`:

- ``event_id`` is LiteLLM's id of the call (``litellm_call_id``; not the provider's
  response id, which a self-hosted server may repeat), so a call logged twice (LiteLLM
  may call both the sync and the async hook) is one event; ``request_id`` is LiteLLM's
  ``trace_id``, shared by the router's retries and fallbacks; ``attempt`` is the
  router's ``attempted_retries`` + 1.
- attribution: ``team`` from the key's team alias (else team id), ``customer`` from the
  end user, ``user_hash`` a BLAKE2b hash of the key's user id (never the id itself),
  ``tags`` from the request tags (``"key:value"`` or bare), the key alias and key hash
  (``litellm_key_alias``, ``litellm_key_hash``) and ``spend_logs_metadata``, whose
  ``team``, ``feature``, ``customer`` and ``environment`` keys set those fields.
- failures: ``status`` from LiteLLM's error code and class (429 ``rate_limited``,
  timeouts ``timeout``, else ``error``) with ``http_status``.
- an answer served from LiteLLM's own cache reached no provider: zero tokens, tagged
  ``litellm_cache_hit``.

The callback never raises into LiteLLM: failures are counted in :meth:`stats` and logged
at most once a minute.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from spendstream.emitter.adapters import from_openai_usage
from spendstream.emitter.instrument import Sink, default_emitter
from spendstream.schemas.usage import MAX_TAG_KEY_CHARS, MAX_TAG_VALUE_CHARS, MAX_TAGS, UsageEvent

__all__ = ["SpendstreamLogger", "event_from_payload", "proxy_handler"]

log = logging.getLogger(__name__)
_ATTRIBUTION_KEYS = ("team", "feature", "customer", "environment")
_REMEMBERED_IDS = 10_000  # ids of events sent lately, to send a call logged twice once
_LOG_EVERY_S = 60.0


def event_from_payload(payload: Mapping[str, Any], *, retries: int | None = None,
                       defaults: Mapping[str, Any] | None = None) -> UsageEvent:
    """The UsageEvent of one LiteLLM call from its StandardLoggingPayload.

    ``retries``: the router's ``attempted_retries`` for this call, if it reported one.
    ``defaults``: fields for every event (e.g. ``environment``, ``service``) that the
    payload's own attribution overrides.
    """
    meta = payload.get("metadata") or {}
    hidden = payload.get("hidden_params") or {}
    provider = payload.get("custom_llm_provider") or (payload.get("error_information") or {}).get("llm_provider")
    provider = str(provider or "unknown")
    model = str(hidden.get("litellm_model_name") or payload.get("model") or "unknown").removeprefix(f"{provider}/")
    fields: dict[str, Any] = {"team": None, "feature": None, "customer": None, "environment": None,
                              **(defaults or {})}
    fields.update(
        event_id=str(payload.get("litellm_call_id") or payload["id"]),
        request_id=str(payload.get("trace_id") or payload.get("litellm_call_id") or payload["id"]),
        attempt=retries + 1 if isinstance(retries, int) and retries >= 0 else 1,
        provider=provider, model=model, **_timing(payload), **_status(payload))
    team = meta.get("user_api_key_team_alias") or meta.get("team_alias") or meta.get("user_api_key_team_id") \
        or meta.get("team_id")
    customer = payload.get("end_user") or meta.get("user_api_key_end_user_id")
    fields.update({k: v for k, v in (("team", team), ("customer", customer)) if v})
    if meta.get("user_api_key_user_id"):
        fields["user_hash"] = hashlib.blake2b(str(meta["user_api_key_user_id"]).encode(), digest_size=16,
                                              person=b"spendstream-usr").hexdigest()
    spend_meta = meta.get("spend_logs_metadata") or {}
    fields.update({k: str(spend_meta[k]) for k in _ATTRIBUTION_KEYS if spend_meta.get(k)})
    tags = _tags(payload, meta, spend_meta, base=dict(fields.pop("tags", None) or {}))
    if payload.get("cache_hit"):
        tags["litellm_cache_hit"] = "true"
    else:
        fields.update(_tokens(payload, meta, hidden, model=model))
    return UsageEvent(**fields, tags=tags)


def _tokens(payload: Mapping[str, Any], meta: Mapping[str, Any], hidden: Mapping[str, Any], *,
            model: str) -> dict[str, Any]:
    usage = meta.get("usage_object") or hidden.get("usage_object") or {
        "prompt_tokens": payload.get("prompt_tokens") or 0, "completion_tokens": payload.get("completion_tokens") or 0}
    event = from_openai_usage(usage, model=model)
    out = {"input_tokens": event.input_tokens, "cached_input_tokens": event.cached_input_tokens,
           "output_tokens": event.output_tokens, "reasoning_tokens": event.reasoning_tokens}
    # LiteLLM keeps Anthropic-style cache counts beside the OpenAI shape: reads may only be there, and
    # writes are counted inside prompt_tokens by some providers' mappings and beside it by others.
    out["cached_input_tokens"] = out["cached_input_tokens"] or int(usage.get("cache_read_input_tokens") or 0)
    writes = int(usage.get("cache_creation_input_tokens") or 0)
    if out["cached_input_tokens"] + writes > out["input_tokens"]:
        out["input_tokens"] += writes
    out["cache_write_tokens"] = writes
    return out


def _timing(payload: Mapping[str, Any]) -> dict[str, Any]:
    start, end, first = (payload.get(k) for k in ("startTime", "endTime", "completionStartTime"))
    out: dict[str, Any] = {}
    if isinstance(start, (int, float)):
        out["ts"] = datetime.fromtimestamp(start, timezone.utc)
        if isinstance(end, (int, float)) and end >= start:
            out["latency_ms"] = (end - start) * 1000
        if payload.get("stream") and isinstance(first, (int, float)) and start < first <= (end or first):
            out["ttft_ms"] = (first - start) * 1000
    return out


def _status(payload: Mapping[str, Any]) -> dict[str, Any]:
    if payload.get("status") == "success":
        return {"status": "ok"}
    error = payload.get("error_information") or {}
    code = str(error.get("error_code") or "")
    http_status = int(code) if code.isdigit() and 100 <= int(code) <= 599 else None
    kind = str(error.get("error_class") or "")
    if http_status == 429 or "RateLimit" in kind:
        status = "rate_limited"
    elif "Timeout" in kind or http_status in (408, 504):
        status = "timeout"
    else:
        status = "error"
    return {"status": status, "http_status": http_status}


def _tags(payload: Mapping[str, Any], meta: Mapping[str, Any], spend_meta: Mapping[str, Any], *,
          base: dict[str, str]) -> dict[str, str]:
    tags = dict(base)
    for tag in payload.get("request_tags") or ():
        key, _, value = str(tag).partition(":")
        tags[key.strip()] = value.strip()
    for name, key in (("litellm_key_alias", "user_api_key_alias"), ("litellm_key_hash", "user_api_key_hash")):
        if meta.get(key):
            tags[name] = str(meta[key])
    tags.update({str(k): str(v) for k, v in spend_meta.items()
                 if k not in _ATTRIBUTION_KEYS and isinstance(v, (str, int, float, bool))})
    # the contract bounds tags; a tag too long is cut rather than the event lost
    bounded = {k[:MAX_TAG_KEY_CHARS]: v[:MAX_TAG_VALUE_CHARS] for k, v in tags.items() if k}
    return dict(list(bounded.items())[:MAX_TAGS])


class SpendstreamLogger(CustomLogger):
    """LiteLLM's CustomLogger that emits one UsageEvent per call and per retry.

    ``emitter``: where events go (default: the process-wide Emitter for
    ``SPENDSTREAM_KAFKA_BOOTSTRAP``, made on the first event). Other keyword arguments
    are fields for every event (``environment``, ``service``, a default ``team``, …),
    validated here.
    """

    def __init__(self, *, emitter: Sink | None = None, **defaults: Any) -> None:
        super().__init__()
        UsageEvent(provider="check", model="check", **defaults)  # a bad default fails here, with its name
        self._emitter = emitter
        self._defaults = {"service": "litellm", **defaults}
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._sent_ids: OrderedDict[str, None] = OrderedDict()
        self._last_log = -_LOG_EVERY_S

    def stats(self) -> dict[str, int]:
        """``events_emitted``, ``events_refused`` (the emitter dropped them, counted there), ``duplicates``
        (a call logged twice), ``failed`` (no event could be made or sent)."""
        out = dict.fromkeys(("events_emitted", "events_refused", "duplicates", "failed"), 0)
        with self._lock:
            out.update(self._counts)
        return out

    def log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs)

    def log_failure_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs)

    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs)

    async def async_log_failure_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs)

    def _record(self, kwargs: Mapping[str, Any]) -> None:
        try:
            payload = kwargs.get("standard_logging_object")
            if not isinstance(payload, Mapping):
                raise ValueError("LiteLLM passed no standard_logging_object")
            retries = ((kwargs.get("litellm_params") or {}).get("metadata") or {}).get("attempted_retries")
            event = event_from_payload(payload, retries=retries, defaults=self._defaults)
            with self._lock:
                if event.event_id in self._sent_ids:
                    self._counts["duplicates"] += 1
                    return
                self._sent_ids[event.event_id] = None
                if len(self._sent_ids) > _REMEMBERED_IDS:
                    self._sent_ids.popitem(last=False)
            if self._emitter is None:
                try:
                    self._emitter = default_emitter()
                except ValueError as exc:  # not configured: our own message says what to set
                    self._failed(str(exc))
                    return
            self._count("events_emitted" if self._emitter.emit(event) else "events_refused")
        except Exception as exc:  # LiteLLM must never see an exception of ours
            # the type only: a validation message could quote a user id from the payload
            self._failed(type(exc).__name__)

    def _failed(self, reason: str) -> None:
        self._count("failed")
        now = time.monotonic()
        with self._lock:
            should_log = now - self._last_log >= _LOG_EVERY_S
            if should_log:
                self._last_log = now
        if should_log:
            log.warning("spendstream LiteLLM callback could not record a call (%s); further failures are "
                        "counted in stats()", reason)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1


# For the proxy's config.yaml: its emitter is made from the environment on the first event, not at import.
proxy_handler = SpendstreamLogger()
