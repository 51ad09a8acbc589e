"""Four weeks of synthetic usage for the read-side benchmark, as Arrow columns in the project's own schema.

Everything is numpy, seeded, and priced by the project's vectorised engine
(:meth:`Pricer.price_columns`), then shaped by :func:`spendstream.sinks.rows.usage_table`
into the writer's ``usage_events`` columns, so the rows are the rows a worker writes.

The shape of the traffic (:class:`Keys` draws the keys):

- requests per minute follow a daily profile (peak mid-afternoon UTC), a weekly one
  (weekends at ~40 %), a slow trend and per-hour noise, over ``days`` days ending at ``end``;
- 24 teams own 200 features (Zipf-sized); a feature runs on 1-3 of 30 models, 27 of
  them in the price catalog and 3 self-hosted ones it cannot price (on their own GPU
  deployments); customers are 50,000, Zipf(1.05); 40 services;
- 2 % of events are retries: attempt 2 of a request whose attempt 1 was rate limited
  or failed (no tokens), 1-30 s later;
- 5 % of events are stored twice: the identical row again in the next insert, as a
  re-delivery after a crash would be;
- some events carry tags, a prompt-prefix fingerprint, a ``max_tokens``, batch mode or
  the flex/priority tiers; 0.1 % arrive hours late (``ingested_at``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.batches import EVENT_COLUMNS, TS, BatchResult
from spendstream.pricing.engine import Pricer, UsageColumns
from spendstream.sinks.rows import usage_table

# 27 models the catalog prices, then 3 self-hosted ones it cannot (each on a GPU deployment).
PRICED_MODELS = (
    ("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("openai", "gpt-4.1"), ("openai", "gpt-4.1-mini"),
    ("openai", "gpt-4.1-nano"), ("openai", "o3"), ("openai", "o4-mini"), ("openai", "gpt-5"),
    ("openai", "gpt-5-mini"), ("openai", "gpt-5-nano"),
    ("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-3-5-haiku-latest"), ("anthropic", "claude-opus-4-1"),
    ("anthropic", "claude-haiku-4-5"), ("anthropic", "claude-sonnet-4"),
    ("google", "gemini-2.5-flash"), ("google", "gemini-2.5-pro"), ("google", "gemini-2.5-flash-lite"),
    ("mistral", "mistral-large-latest"), ("mistral", "mistral-small-latest"),
    ("groq", "llama-3.3-70b-versatile"), ("groq", "llama-3.1-8b-instant"),
    ("deepseek", "deepseek-chat"), ("deepseek", "deepseek-reasoner"),
    ("aws", "amazon.nova-pro-v1:0"), ("x-ai", "grok-3"), ("x-ai", "grok-3-mini"),
)
SELF_HOSTED = (("self-hosted", "acme-llama-3-70b-ft", "gpu-llama-70b"),
               ("self-hosted", "acme-qwen-2.5-32b", "gpu-qwen-32b"),
               ("self-hosted", "acme-mistral-7b-ft", "gpu-mistral-7b"))
MODELS = PRICED_MODELS + tuple((p, m) for p, m, _ in SELF_HOSTED)
REASONING = {"o3", "o4-mini", "gpt-5", "gpt-5-mini", "gpt-5-nano", "deepseek-reasoner", "gemini-2.5-pro"}
PARTITIONS = 12
EXTRA_COLUMNS = [("tags", pa.map_(pa.string(), pa.string())), ("folded_tags", pa.list_(pa.string())),
                 ("source_topic", pa.string()), ("source_partition", pa.uint32()), ("source_offset", pa.uint64())]
BATCH_SCHEMA = pa.schema(EVENT_COLUMNS + EXTRA_COLUMNS)  # a BatchResult's events, as the stages build them


@dataclass(frozen=True, slots=True)
class Shape:
    """Cardinalities and rates of the generated traffic."""

    days: int = 28
    teams: int = 24
    features: int = 200
    customers: int = 50_000
    services: int = 40
    users: int = 100_000
    retry_share: float = 0.02      # of events: attempt 2 of a request whose attempt 1 failed
    duplicate_share: float = 0.05  # of events: stored a second time, identical
    late_share: float = 0.001      # of events: ingested 1-6 hours after their ts


def hex_ids(rng: np.random.Generator, n: int, *, nbytes: int = 16) -> pa.Array:
    """``n`` random lowercase hex strings of ``2 * nbytes`` characters (uuid4().hex-like), vectorised."""
    pairs = np.array([f"{i:02x}" for i in range(256)], dtype="S2").view(np.uint16)
    chars = np.ascontiguousarray(pairs[rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)])
    return pa.array(chars.view(f"S{2 * nbytes}").ravel()).cast(pa.string())


def zipf(rng: np.random.Generator, n: int, size: int, *, s: float) -> np.ndarray:
    """``size`` draws of ranks 0..n-1 with Zipf(s) weights."""
    cdf = np.cumsum(1.0 / np.arange(1, n + 1) ** s)
    return np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(size)), n - 1)


def timestamps(values_ms: np.ndarray) -> pa.Array:
    return pa.array(values_ms.astype(np.int64), pa.int64()).cast(TS)


class Keys:
    """The fixed universe of keys (teams, features, customers, ...) and how each feature behaves."""

    def __init__(self, shape: Shape, rng: np.random.Generator) -> None:
        f = shape.features
        self.shape = shape
        self.feature_names = pa.array([f"feature-{k:03d}" for k in range(f)])
        self.team_names = pa.array([f"team-{k:02d}" for k in range(shape.teams)])
        self.customer_names = pa.array([f"cust-{k:05d}" for k in range(shape.customers)])
        self.service_names = pa.array([f"svc-{k:02d}" for k in range(shape.services)])
        self.users = hex_ids(rng, shape.users, nbytes=8)
        # every team owns a feature; the rest go to teams by Zipf size; a feature lives in one service
        self.team_of = np.concatenate([np.arange(shape.teams), zipf(rng, shape.teams, f - shape.teams, s=0.8)])
        self.service_of = np.concatenate([np.arange(shape.services),
                                          zipf(rng, shape.services, f - shape.services, s=0.7)])
        # every model is some feature's main model; up to two more models share a feature's traffic
        main = rng.permutation(np.concatenate([np.arange(len(MODELS)),
                                               zipf(rng, len(MODELS), f - len(MODELS), s=0.9)]))
        others = rng.integers(0, len(MODELS), size=(f, 2))
        self.models = np.column_stack([main, others])
        share = np.column_stack([np.ones(f), rng.random((f, 2)) < 0.4]) * np.array([0.7, 0.2, 0.1])
        self.model_cdf = np.cumsum(share / share.sum(axis=1, keepdims=True), axis=1)
        self.cache_share = np.where(rng.random(f) < 0.4, rng.uniform(0.2, 0.8, f), 0.0)
        self.batch_feature = rng.random(f) < 0.08
        self.input_scale = rng.lognormal(0, 0.7, f)
        self.output_scale = rng.lognormal(0, 0.5, f)
        self.fingerprints = hex_ids(rng, f * 8)  # eight stable prompt prefixes per feature
        self.prefix_tokens = rng.integers(512, 8_000, f * 8)
        self.routes = pa.array([f"/api/v{1 + k % 3}/route-{k:02d}" for k in range(60)])
        self.experiments = pa.array([f"exp-{k:02d}" for k in range(20)])
        self.provider_names = pa.array([p for p, _ in MODELS])
        self.model_names = pa.array([m for _, m in MODELS])
        self.deployments = pa.array([None] * len(PRICED_MODELS) + [d for _, _, d in SELF_HOSTED], pa.string())
        self.batchable = np.zeros(len(MODELS), bool)  # set from the price catalog by the Generator
        self.priority = np.zeros(len(MODELS), bool)
        self.openai = np.array([p == "openai" for p, _ in MODELS])
        self.reasoning = np.array([m in REASONING for _, m in MODELS])


def requests_per_minute(rng: np.random.Generator, requests: int, *, start: datetime, days: int) -> np.ndarray:
    """How many requests start in each minute from ``start``: daily and weekly profile, trend, noise."""
    minutes = days * 1440
    at = np.datetime64(start.replace(tzinfo=None), "m") + np.arange(minutes)
    hour = (at.astype("datetime64[h]").astype(np.int64) % 24).astype(float)
    weekday = (at.astype("datetime64[D]").astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday (3)
    daily = 0.25 + 0.75 * np.exp(-(((hour - 14.5) / 4.5) ** 2))
    weekly = np.where(weekday >= 5, 0.42, 1.0)
    trend = np.linspace(0.9, 1.1, minutes)
    noise = np.repeat(rng.lognormal(0, 0.15, minutes // 60 + 1), 60)[:minutes]
    weight = daily * weekly * trend * noise
    return rng.multinomial(requests, weight / weight.sum())


@dataclass(slots=True)
class Chunk:
    """One insert's worth of events: the priced rows, and the emitter ledger for them."""

    rows: pa.Table      # usage_events columns, as the writer inserts them
    ledger: pa.Table    # emitter_ledger rows: distinct events per service and minute
    requests: int
    retries: int
    price_s: float      # of the chunk's making, the time in Pricer.price_columns


class Generator:
    """Chunks of priced events over ``shape.days`` days ending at ``end``, each about ``chunk_rows`` events."""

    def __init__(self, events: int, *, end: datetime, seed: int, shape: Shape = Shape(),
                 pricer: Pricer | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.shape, self.end, self.events = shape, end, events
        self.start = end - timedelta(days=shape.days)
        self.pricer = pricer or Pricer()
        self.keys = Keys(shape, self.rng)
        # batch mode and the priority tier only where the catalog prices them: unpriced means self-hosted here
        for flags, mode, tier in ((self.keys.batchable, "batch", None), (self.keys.priority, "realtime", "priority")):
            flags[:] = [self.pricer.group_price(p, m, self.start, mode, tier).applied.priced for p, m in MODELS]
        self.retries = round(events * shape.retry_share)
        self.requests = events - self.retries
        self.per_minute = requests_per_minute(self.rng, self.requests, start=self.start, days=shape.days)
        self.offsets = np.zeros(PARTITIONS, dtype=np.int64)

    def chunks(self, chunk_rows: int) -> Iterator[Chunk]:
        cum = np.cumsum(self.per_minute)
        bounds = [0, *np.searchsorted(cum, np.arange(chunk_rows, self.requests, chunk_rows)).tolist(),
                  len(self.per_minute)]
        start_ms = int(self.start.timestamp() * 1000)
        done_requests = done_retries = 0
        for index, (m0, m1) in enumerate(zip(bounds, bounds[1:], strict=False)):
            counts = self.per_minute[m0:m1]
            n = int(counts.sum())
            if n == 0:
                continue
            # retries spread over the chunks in proportion to their requests, exactly `self.retries` in all
            retries = round(self.retries * (done_requests + n) / self.requests) - done_retries
            minute_ms = start_ms + 60_000 * np.arange(m0, m1, dtype=np.int64)
            ts_ms = np.repeat(minute_ms, counts) + self.rng.integers(0, 60_000, n)
            yield self._chunk(index, ts_ms, retries)
            done_requests += n
            done_retries += retries

    def _chunk(self, index: int, ts_ms: np.ndarray, retries: int) -> Chunk:
        events = self._events(ts_ms, retries)
        began = time.perf_counter()
        priced = self.pricer.price_columns(UsageColumns.from_table(events))
        price_s = time.perf_counter() - began
        rows = usage_table(BatchResult(events=events, priced=priced))
        rows = rows.set_column(rows.schema.get_field_index("ingested_at"), "ingested_at",
                               timestamps(self._ingested_ms))
        minute = pc.floor_temporal(events["ts"], unit="minute")
        counts = pa.table({"service": events["service"], "minute": minute}).group_by(
            ["service", "minute"]).aggregate([([], "count_all")])
        ledger = pa.table({
            "emitter_id": pa.repeat(pa.scalar(f"read-scale-{index}"), counts.num_rows),
            "service": counts["service"], "minute": counts["minute"],
            "events": counts["count_all"].cast(pa.uint64()), "exact": pa.repeat(pa.scalar(True), counts.num_rows),
            "reported_at": pc.add(counts["minute"], pa.scalar(timedelta(seconds=90))),
        })
        return Chunk(rows, ledger, len(ts_ms), retries, price_s)

    def _events(self, ts_ms: np.ndarray, retries: int) -> pa.Table:
        """Requests starting at ``ts_ms`` (attempt 1), then ``retries`` attempts 2 of as many of them."""
        rng, k, shape = self.rng, self.keys, self.shape
        n = len(ts_ms)
        feature = zipf(rng, shape.features, n, s=1.0)
        model = k.models[feature, (rng.random(n)[:, None] > k.model_cdf[feature, :2]).sum(axis=1)]
        customer = zipf(rng, shape.customers, n, s=1.05)
        batch = k.batch_feature[feature] & k.batchable[model] | (rng.random(n) < 0.02) & k.batchable[model]
        tier_draw = rng.random(n)
        tier = np.where(~batch & k.openai[model] & (tier_draw < 0.04), 1,
                        np.where(~batch & k.priority[model] & (tier_draw > 0.98), 2, 0))

        inp = np.clip(rng.lognormal(np.log(1_200), 1.1, n) * k.input_scale[feature], 1, 150_000).astype(np.int64)
        out = np.clip(rng.lognormal(np.log(220), 0.9, n) * k.output_scale[feature], 1, 16_000).astype(np.int64)
        max_tokens = np.array([256, 1_024, 4_096, 8_192])[rng.integers(0, 4, n)]
        has_max = rng.random(n) < 0.6
        out = np.where(has_max, np.minimum(out, max_tokens), out)
        share = k.cache_share[feature]
        cached = np.where((share > 0) & (inp >= 1_024) & (rng.random(n) < 0.7),
                          (inp * share * rng.uniform(0.5, 1.0, n)).astype(np.int64), 0)
        writes = np.where((share > 0) & (cached == 0) & (inp >= 1_024) & (rng.random(n) < 0.1),
                          (inp * share).astype(np.int64), 0)
        writes_1h = np.where(rng.random(n) < 0.2, writes, 0)
        reasoning = np.where(k.reasoning[model], (out * rng.uniform(0.3, 0.8, n)).astype(np.int64), 0)
        prefix = feature * 8 + rng.integers(0, 8, n)
        has_prefix = (share > 0) & (rng.random(n) < 0.5)

        # attempt 2 of `retries` requests: the same request a few seconds later; attempt 1 failed without tokens
        retried = rng.choice(n, size=retries, replace=False)
        row = np.concatenate([np.arange(n), retried])  # the request each event belongs to
        m = len(row)
        attempt = np.concatenate([np.ones(n, np.int64), np.full(retries, 2)])
        failed = np.zeros(m, bool)
        failed[retried] = True
        limited = failed & (rng.random(m) < 0.6)
        row_ts = ts_ms[row] + np.where(attempt == 2, rng.integers(1_000, 30_000, m), 0)
        row_ts = np.minimum(row_ts, int(self.end.timestamp() * 1000) - 1)
        lag = rng.lognormal(np.log(800), 0.8, m) + np.where(rng.random(m) < shape.late_share,
                                                             rng.uniform(3_600e3, 6 * 3_600e3, m), 0)
        self._ingested_ms = row_ts + lag.astype(np.int64)

        def tokens(values: np.ndarray) -> pa.Array:
            return pa.array(np.where(failed, 0, values[row]), pa.uint64())

        def nullable(values: np.ndarray, present: np.ndarray, type_: pa.DataType) -> pa.Array:
            return pa.array(values, type_, mask=~present)

        latency = np.where(failed, rng.uniform(50, 500, m), 300 + out[row] * rng.uniform(8, 25, m))
        ttft = rng.lognormal(np.log(350), 0.5, m)
        streamed = ~failed & (rng.random(m) < 0.9)
        estimated = rng.random(m) < 0.02
        user = rng.integers(0, shape.users, n)
        has_user = rng.random(n) < 0.7
        partition = rng.integers(0, PARTITIONS, m)
        columns = {
            "event_id": hex_ids(rng, m),
            "ts": timestamps(row_ts),
            "request_id": hex_ids(rng, n).take(pa.array(row)),
            "attempt": pa.array(attempt, pa.uint32()),
            "provider": k.provider_names.take(pa.array(model[row])),
            "model": k.model_names.take(pa.array(model[row])),
            "deployment": k.deployments.take(pa.array(model[row])),
            "mode": pa.array(np.where(batch[row], "batch", "realtime")),
            "service_tier": pa.array(np.array([None, "flex", "priority"], object)[tier[row]], pa.string()),
            "input_tokens": tokens(inp), "cached_input_tokens": tokens(cached), "cache_write_tokens": tokens(writes),
            "cache_write_1h_tokens": tokens(writes_1h), "output_tokens": tokens(out),
            "reasoning_tokens": tokens(reasoning),
            "tokens_estimated": pa.array(estimated),
            "tokenizer": pa.array(np.where(estimated, "tiktoken:o200k_base", None), pa.string()),
            "latency_ms": pa.array(latency, pa.float64()),
            "ttft_ms": nullable(ttft, streamed, pa.float64()),
            "status": pa.array(np.where(limited, "rate_limited", np.where(failed, "error", "ok"))),
            "http_status": pa.array(np.where(limited, 429, np.where(failed, rng.choice([500, 503], m), 200)),
                                    pa.uint16()),
            "team": k.team_names.take(pa.array(k.team_of[feature[row]])),
            "feature": k.feature_names.take(pa.array(feature[row])),
            "customer": k.customer_names.take(pa.array(customer[row])),
            "environment": pa.array(np.array(["prod", "staging", "dev"])[
                np.searchsorted([0.9, 0.98], rng.random(n))[row]]),
            "user_hash": pc.if_else(pa.array(has_user[row]), k.users.take(pa.array(user[row])),
                                    pa.scalar(None, pa.string())),
            "prefix_fingerprint": pc.if_else(pa.array(has_prefix[row]), k.fingerprints.take(pa.array(prefix[row])),
                                             pa.scalar(None, pa.string())),
            "prefix_tokens": nullable(k.prefix_tokens[prefix[row]], has_prefix[row], pa.uint64()),
            "max_tokens": nullable(max_tokens[row], has_max[row], pa.uint64()),
            "service": k.service_names.take(pa.array(k.service_of[feature[row]])),
            "extra": pa.repeat(pa.scalar(""), m),
            "tags": self._tags(row, n),
            "folded_tags": pa.ListArray.from_arrays(pa.array(np.zeros(m + 1, np.int32)), pa.array([], pa.string())),
            "source_topic": pa.repeat(pa.scalar("usage"), m),
            "source_partition": pa.array(partition, pa.uint32()),
            "source_offset": pa.array(self._source_offsets(partition), pa.uint64()),
        }
        return pa.Table.from_arrays([columns[name] for name in BATCH_SCHEMA.names], schema=BATCH_SCHEMA)

    def _tags(self, row: np.ndarray, requests: int) -> pa.Array:
        """A quarter of requests name a route, 8 % an experiment (route first when both)."""
        rng, k = self.rng, self.keys
        route = (rng.random(requests) < 0.25)[row]
        experiment = (rng.random(requests) < 0.08)[row]
        route_value = rng.integers(0, len(k.routes), requests)[row]
        experiment_value = rng.integers(0, len(k.experiments), requests)[row]
        lengths = route.astype(np.int32) + experiment
        owner = np.concatenate([np.flatnonzero(route), np.flatnonzero(experiment)])
        which = np.concatenate([np.zeros(route.sum(), np.int64), np.ones(experiment.sum(), np.int64)])
        order = np.lexsort((which, owner))
        values = pa.concat_arrays([k.routes.take(pa.array(route_value[route])),
                                   k.experiments.take(pa.array(experiment_value[experiment]))]).take(pa.array(order))
        keys = pa.array(np.array(["route", "experiment"])[which[order]])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        return pa.MapArray.from_arrays(pa.array(offsets), keys, values)

    def _source_offsets(self, partition: np.ndarray) -> np.ndarray:
        """Kafka offsets per partition, rising with ingestion time, continuing from the previous chunk."""
        order = np.lexsort((self._ingested_ms, partition))
        sorted_partition = partition[order]
        first = np.searchsorted(sorted_partition, sorted_partition)
        offsets = np.empty(len(partition), np.int64)
        offsets[order] = self.offsets[sorted_partition] + np.arange(len(partition)) - first
        self.offsets += np.bincount(partition, minlength=PARTITIONS)
        return offsets
