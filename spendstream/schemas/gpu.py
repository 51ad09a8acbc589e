"""GpuSample v1: one scrape interval of one self-hosted deployment."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from spendstream.schemas._types import Identifier, Label, OptionalCount

Engine = Literal["vllm", "sglang", "tgi", "triton", "dcgm", "unknown"]


class GpuSample(BaseModel):
    """What a serving engine did in one scrape interval.

    A value the exporter could not read is absent (``None``), never 0: an idle GPU
    and a GPU whose counters could not be read must not look the same.
    """

    model_config = ConfigDict(extra="allow", frozen=True, title="GpuSample")

    schema_version: Literal[1] = 1
    sample_id: Identifier = Field(default_factory=lambda: uuid.uuid4().hex)
    ts: AwareDatetime = Field(default_factory=lambda: datetime.now(timezone.utc), description="End of the interval.")
    interval_s: float = Field(gt=0)
    deployment: Identifier
    engine: Engine = "unknown"
    engine_version: Label = None
    model: Label = None
    gpu_type: Label = None
    gpu_count: int | None = Field(default=None, ge=0, strict=True)

    prompt_tokens_delta: OptionalCount = None
    prompt_tokens_cached_delta: OptionalCount = Field(
        default=None, description="Of prompt_tokens_delta, the tokens served from a prefix cache (local or "
                                  "transferred), not computed; None when the engine does not say.")
    generation_tokens_delta: OptionalCount = None
    prompt_tokens_per_s: float | None = Field(default=None, ge=0)
    generation_tokens_per_s: float | None = Field(default=None, ge=0)
    prefill_seconds_delta: float | None = Field(
        default=None, ge=0, description="Time requests spent in prefill, as the engine reports it (vLLM "
                                        "request_prefill_time_seconds; counted when a request finishes).")
    decode_seconds_delta: float | None = Field(
        default=None, ge=0, description="Time requests spent in decode, as the engine reports it.")
    gpu_busy_seconds_delta: float | None = Field(
        default=None, ge=0, description="Time the GPU executed forward passes, as the engine reports it "
                                        "(SGLang gpu_execution_seconds); the usage basis of GPU cost.")
    kv_cache_utilization: float | None = Field(default=None, ge=0, le=1,
                                               description="Mean over the deployment's engines.")
    kv_cache_utilization_max: float | None = Field(
        default=None, ge=0, le=1,
        description="The fullest engine's: data-parallel queues pile up on one engine while the mean looks calm.")
    running_requests: float | None = Field(default=None, ge=0)
    waiting_requests: float | None = Field(default=None, ge=0)
    prefix_cache_hit_rate: float | None = Field(default=None, ge=0, le=1)
    gpu_utilization: float | None = Field(default=None, ge=0, le=1)
    gpu_memory_used_bytes: float | None = Field(default=None, ge=0)
    gpu_power_w: float | None = Field(default=None, ge=0)
    dropped_readings: int | None = Field(
        default=None, ge=0, strict=True,
        description="Readings the exporter dropped from this sample as out of range (absent above, not 0).")
