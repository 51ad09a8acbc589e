"""UsageEvent: one attempt of one model call.

Versions (``schema_version``; every older event stays valid, its newer fields at
their defaults):

- **1**: tokens, attribution, status, latency, prefix fingerprint.
- **2** (the default): server-side tool calls the provider bills per call
  (``web_search_calls``, ``web_fetch_calls``, ``file_search_calls``,
  ``code_execution_calls``) and where the call was served (``region``,
  ``inference_profile``), and what the provider says the call cost
  (``provider_cost_usd``, ``provider_cost_source``). A version 1 event did not
  report these: its 0 calls mean "not reported", which the stored
  ``schema_version`` tells apart.

Token fields have one meaning whatever the provider reports (the emitter's
adapters normalise into it):

- ``input_tokens``: every prompt token the model read, *including* the cached
  and cache-write tokens below (OpenAI's ``prompt_tokens``; for Anthropic the sum
  of ``input_tokens``, ``cache_read_input_tokens`` and ``cache_creation_input_tokens``).
- ``cached_input_tokens``: the part of ``input_tokens`` read from a prompt cache.
- ``cache_write_tokens``: the part of ``input_tokens`` written to a prompt cache.
- ``cache_write_1h_tokens``: the part of ``cache_write_tokens`` written with a
  one-hour lifetime (Anthropic), priced at the 1-hour write rate where there is one.
- ``output_tokens``: every generated token, *including* reasoning tokens.
- ``reasoning_tokens``: the part of ``output_tokens`` spent on reasoning.

Money a provider reports itself (``provider_cost_usd``, e.g. OpenRouter's
``usage.cost`` or a gateway's cost header) travels as decimal text, not a JSON
number: a number is read as a binary float by most decoders, and the amount must
arrive with exactly the digits the provider sent (see ``DecimalText``).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from spendstream.schemas._types import CallCount, DecimalText, Identifier, Label, OptionalCount, TokenCount

MAX_TAGS = 32
MAX_TAG_KEY_CHARS = 64
MAX_TAG_VALUE_CHARS = 256

Status = Literal["ok", "error", "timeout", "rate_limited", "invalid_output"]
Mode = Literal["realtime", "batch"]


def _new_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(timezone.utc)


# A Kafka record may carry many events as one block of columns (the emitter's
# encoding, and the worker's fast path): {"block": BLOCK_FORMAT, "event_id": [...], ...}.
BLOCK_FORMAT = "usage-columns/1"

# Python callers get event_id and ts filled in when they build an event; on the
# wire both are required, because an id made up by the pipeline would count a
# re-delivered event twice.
WIRE_REQUIRED = ("event_id", "ts")


def _wire_required(schema: dict) -> None:
    schema["required"] = sorted(set(schema.get("required", [])) | set(WIRE_REQUIRED))


class UsageEvent(BaseModel):
    """One attempt of one model call, as a service reports it.

    ``event_id`` is the idempotency key: the pipeline stores each id once, however
    often it is delivered. Retries of one logical call share ``request_id`` and
    count up ``attempt``. Fields this version does not know are kept (``extra``)
    and stored, never dropped.
    """

    model_config = ConfigDict(extra="allow", frozen=True, title="UsageEvent", json_schema_extra=_wire_required)

    schema_version: Literal[1, 2] = Field(default=2, description=(
        "The contract version the sender wrote: 1, or 2 (tool calls, region and inference profile)."))
    event_id: Identifier = Field(default_factory=_new_id)
    ts: AwareDatetime = Field(default_factory=_now, description="When the call started (UTC or any zone).")
    request_id: Identifier | None = Field(default=None, description="Shared by every attempt of one logical call.")
    attempt: int = Field(default=1, ge=1, strict=True)

    provider: Identifier = Field(description="e.g. openai, anthropic, google, bedrock, self-hosted.")
    model: Identifier = Field(description="The model as the service called it; normalised when priced.")
    deployment: Label = None
    mode: Mode = "realtime"
    service_tier: Label = None

    input_tokens: TokenCount = 0
    cached_input_tokens: TokenCount = 0
    cache_write_tokens: TokenCount = 0
    cache_write_1h_tokens: TokenCount = 0
    output_tokens: TokenCount = 0
    reasoning_tokens: TokenCount = 0
    tokens_estimated: bool = Field(default=False,
                                   description="True when counted locally, not reported by the provider.")
    tokenizer: Label = Field(default=None, description=(
        "How estimated counts were made: 'tiktoken:o200k_base', 'tiktoken:cl100k_base', or "
        "'approximate:chars/4' where the model has no offline tokenizer."))

    latency_ms: float | None = Field(default=None, ge=0)
    ttft_ms: float | None = Field(default=None, ge=0, description="Time to first token.")
    status: Status = "ok"
    http_status: int | None = Field(default=None, ge=100, le=599, strict=True)

    team: Label = None
    feature: Label = None
    customer: Label = None
    environment: Label = None
    user_hash: Label = None
    tags: dict[str, str] = Field(default_factory=dict, max_length=MAX_TAGS)

    prefix_fingerprint: Label = None
    prefix_tokens: OptionalCount = None
    max_tokens: OptionalCount = None
    service: Label = None

    # -- since schema_version 2 --
    web_search_calls: CallCount = Field(default=0, description=(
        "Server-side web searches (Anthropic server_tool_use.web_search_requests, OpenAI web_search_call "
        "items, Gemini grounding search queries)."))
    web_fetch_calls: CallCount = Field(default=0, description="Server-side web fetches (Anthropic web_fetch).")
    file_search_calls: CallCount = Field(default=0, description="Server-side file/vector-store searches "
                                                                 "(OpenAI file_search_call items).")
    code_execution_calls: CallCount = Field(default=0, description=(
        "Server-side code executions (OpenAI code_interpreter_call items, Anthropic code execution tool uses)."))
    region: Label = Field(default=None, description=(
        "Where the provider served the call, as it names it: us-east-1, europe-west4, eastus2, us (Anthropic "
        "inference_geo)."))
    inference_profile: Label = Field(default=None, description=(
        "How the call was routed across regions, as the provider names it: a Bedrock inference profile "
        "(us.anthropic.…, global.anthropic.…) or its ARN, Vertex AI's global endpoint, an Azure deployment "
        "type (global, datazone, regional)."))
    provider_cost_usd: DecimalText = Field(default=None, description=(
        "What the provider (or a gateway) says this call cost, in USD, as decimal text exactly as reported "
        "(e.g. OpenRouter usage.cost \"0.000123\"); stored beside the computed cost, never in its place unless "
        "SPENDSTREAM_BILLING_POLICY says so."))
    provider_cost_source: Label = Field(default=None, description=(
        "Who reported provider_cost_usd, e.g. 'openrouter:usage.cost' or 'gateway:x-litellm-response-cost'."))

    @field_validator("tags")
    @classmethod
    def _bounded_tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            if not 0 < len(key) <= MAX_TAG_KEY_CHARS:
                raise ValueError(f"tag key {key[:80]!r} must be 1..{MAX_TAG_KEY_CHARS} characters")
            if len(value) > MAX_TAG_VALUE_CHARS:
                raise ValueError(f"tag {key!r} value longer than {MAX_TAG_VALUE_CHARS} characters")
        return tags

    @model_validator(mode="after")
    def _parts_within_totals(self) -> UsageEvent:
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError(
                "cached_input_tokens + cache_write_tokens exceed input_tokens "
                f"({self.cached_input_tokens} + {self.cache_write_tokens} > {self.input_tokens}); "
                "input_tokens must include cached and cache-write tokens"
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise ValueError(
                f"cache_write_1h_tokens ({self.cache_write_1h_tokens}) exceed cache_write_tokens "
                f"({self.cache_write_tokens}); cache_write_tokens must include the 1-hour writes"
            )
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError(
                f"reasoning_tokens ({self.reasoning_tokens}) exceed output_tokens ({self.output_tokens}); "
                "output_tokens must include reasoning tokens"
            )
        return self

    @property
    def extra_fields(self) -> dict[str, object]:
        """Fields this schema version does not know, kept as sent."""
        return dict(self.__pydantic_extra__ or {})
