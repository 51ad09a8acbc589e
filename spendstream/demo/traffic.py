"""Demo traffic: the bundled Azure conversation trace, with attribution generated on top.

The trace gives each request's arrival time and its input and output token
counts. Everything else is generated here, seeded, so a run is reproducible and
a test can recompute it:

- **feature** by weight, which fixes the **team** and the **model** (one feature
  runs on a self-hosted model the catalog cannot price, to show unpriced events);
- **customer** from 40 with Zipf(1) weights; **environment** 95 % prod, 5 % staging;
- **prompt caching**: features with a cache share read that share of the prompt
  from cache when the prompt is at least 1,024 tokens (Anthropic: one call in ten
  writes the cache instead);
- **failures**: 4 % of requests fail 1–3 times before succeeding; a failed attempt
  is rate limited (429), a server error (500/503) or a timeout, all with no tokens,
  or an invalid output, billed in full; retries share the request id, one second apart;
- **malformed**: 0.2 % of events are sent broken (a token count as text, or no
  provider), to show dead-lettering.

Timestamps keep the trace's spacing, shifted so the trace starts at ``start``.
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

from spendstream.schemas.gpu import GpuSample
from spendstream.schemas.usage import UsageEvent

TRACE_FILE = "azure_llm_2023_conv.csv"
DEFAULT_SEED = 20231116
MIN_CACHEABLE_TOKENS = 1024
FAILURE_RATE = 0.04
MALFORMED_RATE = 0.002


@dataclass(frozen=True, slots=True)
class TraceRow:
    offset_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    team: str
    weight: float
    models: tuple[tuple[str, str, float], ...]  # provider, model, weight
    cache_share: float = 0.0


FEATURES = (
    Feature("support-chat", "support", 0.35,
            (("openai", "gpt-4o-mini", 0.7), ("anthropic", "claude-3-5-haiku-latest", 0.3)), cache_share=0.5),
    Feature("search-summarise", "search", 0.25, (("openai", "gpt-4o", 1.0),), cache_share=0.3),
    Feature("code-review", "platform", 0.15, (("anthropic", "claude-sonnet-4-5", 1.0),), cache_share=0.4),
    Feature("email-draft", "growth", 0.15, (("google", "gemini-2.5-flash", 1.0),)),
    Feature("internal-rag", "platform", 0.10, (("self-hosted", "acme-llama-3-70b-ft", 1.0),)),
)
DEMO_DEPLOYMENT = "acme-llama-70b"  # described in spendstream/data/demo_deployments.yaml
CUSTOMERS = tuple(f"cust-{k:03d}" for k in range(1, 41))
FAILURES = (("rate_limited", 429), ("error", 500), ("error", 503), ("timeout", None), ("invalid_output", 200))


def load_trace(limit: int | None = None) -> list[TraceRow]:
    """The bundled trace as offsets from its first request (UTC, as the trace's README says)."""
    text = resources.files("spendstream.data").joinpath(TRACE_FILE).read_text(encoding="utf-8")
    rows: list[TraceRow] = []
    first: datetime | None = None
    for line in csv.DictReader(io.StringIO(text)):
        # 7 fractional digits; datetime takes 6
        stamp, _, fraction = line["TIMESTAMP"].partition(".")
        ts = datetime.fromisoformat(f"{stamp}.{fraction[:6]:0<6}")
        first = first or ts
        rows.append(TraceRow((ts - first).total_seconds(), int(line["ContextTokens"]), int(line["GeneratedTokens"])))
        if limit is not None and len(rows) >= limit:
            break
    return rows


def generate(rows: list[TraceRow], *, run_id: str, start: datetime,
             seed: int = DEFAULT_SEED) -> list[UsageEvent | dict[str, Any]]:
    """One event per attempt, in trace order; malformed events are plain dicts."""
    rng = random.Random(seed)
    customer_weights = [1 / k for k in range(1, len(CUSTOMERS) + 1)]
    events: list[UsageEvent | dict[str, Any]] = []
    for n, row in enumerate(rows):
        feature = rng.choices(FEATURES, weights=[f.weight for f in FEATURES])[0]
        provider, model, _ = rng.choices(feature.models, weights=[m[2] for m in feature.models])[0]
        common = dict(
            request_id=f"{run_id}-r{n:06d}",
            provider=provider,
            model=model,
            team=feature.team,
            feature=feature.name,
            customer=rng.choices(CUSTOMERS, weights=customer_weights)[0],
            environment="prod" if rng.random() < 0.95 else "staging",
            service="spendstream-demo",
            deployment=DEMO_DEPLOYMENT if provider == "self-hosted" else None,
        )
        started = start + timedelta(seconds=row.offset_s)
        failures = rng.randint(1, 3) if rng.random() < FAILURE_RATE else 0
        for attempt in range(1, failures + 2):
            fields = dict(common, event_id=f"{run_id}-{n:06d}-{attempt}", attempt=attempt,
                          ts=started + timedelta(seconds=attempt - 1))
            if attempt <= failures:
                status, http = rng.choice(FAILURES)
                billed = status == "invalid_output"
                fields.update(status=status, http_status=http, latency_ms=30_000.0 if status == "timeout" else 800.0)
            else:
                billed = True
                fields.update(status="ok", http_status=200)
            if billed:
                fields.update(_tokens(rng, feature, provider, row))
                fields.update(ttft_ms=200.0 + row.input_tokens / 50, latency_ms=200.0 + row.input_tokens / 50
                              + row.output_tokens * 20.0)
            if rng.random() < MALFORMED_RATE:
                events.append(_malformed(rng, fields))
            else:
                events.append(UsageEvent(**fields))
    return events


def _tokens(rng: random.Random, feature: Feature, provider: str, row: TraceRow) -> dict[str, int]:
    tokens = {"input_tokens": row.input_tokens, "output_tokens": row.output_tokens}
    if feature.cache_share and row.input_tokens >= MIN_CACHEABLE_TOKENS:
        cached = int(row.input_tokens * feature.cache_share)
        if provider == "anthropic" and rng.random() < 0.1:
            tokens["cache_write_tokens"] = cached
        else:
            tokens["cached_input_tokens"] = cached
    return tokens


def _malformed(rng: random.Random, fields: dict[str, Any]) -> dict[str, Any]:
    broken = dict(fields, ts=fields["ts"].isoformat())
    if rng.random() < 0.5:
        broken["input_tokens"] = "n/a"
    else:
        del broken["provider"]
    return broken


def gpu_samples(events: list[UsageEvent | dict[str, Any]], *, start: datetime, end: datetime,
                interval_s: float = 15.0, run_id: str = "demo") -> list[GpuSample]:
    """What a GPU exporter on the demo's self-hosted deployment would have sent: the tokens its
    events used, per scrape interval, and a KV-cache use that follows the load (generated)."""
    per_interval: dict[int, tuple[int, int]] = {}
    for event in events:
        if isinstance(event, UsageEvent) and event.deployment == DEMO_DEPLOYMENT:
            slot = int((event.ts - start).total_seconds() // interval_s)
            prompt, generated = per_interval.get(slot, (0, 0))
            per_interval[slot] = (prompt + event.input_tokens, generated + event.output_tokens)
    samples = []
    for slot in range(int((end - start).total_seconds() // interval_s) + 1):
        prompt, generated = per_interval.get(slot, (0, 0))
        load = (prompt + generated) / interval_s
        samples.append(GpuSample(
            sample_id=f"{run_id}-gpu-{slot:05d}", ts=start + timedelta(seconds=(slot + 1) * interval_s),
            interval_s=interval_s, deployment=DEMO_DEPLOYMENT, engine="vllm", model="acme-llama-3-70b-ft",
            gpu_type="A100-80GB", gpu_count=4, prompt_tokens_delta=prompt, generation_tokens_delta=generated,
            prompt_tokens_per_s=prompt / interval_s, generation_tokens_per_s=generated / interval_s,
            kv_cache_utilization=min(0.97, 0.05 + load / 4_000), running_requests=float(load > 0),
            waiting_requests=0.0, gpu_utilization=min(1.0, 0.08 + load / 3_000)))
    return samples
