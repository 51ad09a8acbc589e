"""Four weeks of synthetic usage for the read-side benchmark, as Arrow columns in the project's own schema.

Everything is numpy, seeded, and priced by the project's vectorised engine
(:meth:`Pricer.price_columns`), then shaped by :func:`spendstream.sinks.rows.usage_table`
into the writer's ``usage_events`` columns, so the rows are the rows a worker writes.

The shape of the traffic (bench/read_scale_keys.py draws the keys):

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
from read_scale_keys import MODELS, Keys, Shape, hex_ids, zipf

from spendstream.batches import EVENT_COLUMNS, TS, BatchResult
from spendstream.pricing.engine import Pricer, UsageColumns
from spendstream.schemas.usage import UsageEvent
from spendstream.sinks.rows import usage_table

PARTITIONS = 12
EXTRA_COLUMNS = [("tags", pa.map_(pa.string(), pa.string())), ("folded_tags", pa.list_(pa.string())),
                 ("source_topic", pa.string()), ("source_partition", pa.uint32()), ("source_offset", pa.uint64())]
BATCH_SCHEMA = pa.schema(EVENT_COLUMNS + EXTRA_COLUMNS)  # a BatchResult's events, as the stages build them


def _defaults(name: str, rows: int) -> pa.Array:
    """``rows`` of a UsageEvent field's default (schema_version 2, 0 tool calls, no region or provider cost)."""
    default = UsageEvent.model_fields[name].get_default(call_default_factory=True)
    return pa.array([default] * rows, BATCH_SCHEMA.field(name).type)


def timestamps(values_ms: np.ndarray) -> pa.Array:
    return pa.array(values_ms.astype(np.int64), pa.int64()).cast(TS)


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
    """One insert's worth of distinct events, priced."""

    rows: pa.Table      # usage_events columns, as the writer inserts them
    requests: int
    retries: int
    price_s: float      # of the chunk's making, the time in Pricer.price_columns


class Generator:
    """Chunks of priced events over ``shape.days`` days ending at ``end``, each about ``chunk_rows`` events."""

    def __init__(self, events: int, *, end: datetime, seed: int, shape: Shape | None = None,
                 pricer: Pricer | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        shape = shape or Shape()
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
        for m0, m1 in zip(bounds, bounds[1:], strict=False):
            counts = self.per_minute[m0:m1]
            n = int(counts.sum())
            if n == 0:
                continue
            # retries spread over the chunks in proportion to their requests, exactly `self.retries` in all
            retries = round(self.retries * (done_requests + n) / self.requests) - done_retries
            minute_ms = start_ms + 60_000 * np.arange(m0, m1, dtype=np.int64)
            ts_ms = np.repeat(minute_ms, counts) + self.rng.integers(0, 60_000, n)
            yield self._chunk(ts_ms, retries)
            done_requests += n
            done_retries += retries

    def _chunk(self, ts_ms: np.ndarray, retries: int) -> Chunk:
        events, ingested_ms = self._events(ts_ms, retries)
        began = time.perf_counter()
        priced = self.pricer.price_columns(UsageColumns.from_table(events))
        price_s = time.perf_counter() - began
        # as the writer builds its rows, then each row's own ingestion time (the writer stamps a batch's)
        rows = usage_table(BatchResult(events=events, priced=priced))
        rows = rows.set_column(rows.schema.get_field_index("ingested_at"), "ingested_at", timestamps(ingested_ms))
        return Chunk(rows, len(ts_ms), retries, price_s)

    def _events(self, ts_ms: np.ndarray, retries: int) -> tuple[pa.Table, np.ndarray]:
        """Requests starting at ``ts_ms`` (attempt 1), then ``retries`` attempts 2 of as many of them, as a
        BatchResult's events; and when each was ingested (ms)."""
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
        ingested_ms = row_ts + lag.astype(np.int64)

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
            "source_offset": pa.array(self._source_offsets(partition, ingested_ms), pa.uint64()),
        }
        for name in BATCH_SCHEMA.names:  # contract fields this traffic does not use: their defaults
            if name not in columns:
                columns[name] = _defaults(name, m)
        return pa.Table.from_arrays([columns[name] for name in BATCH_SCHEMA.names], schema=BATCH_SCHEMA), ingested_ms

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

    def _source_offsets(self, partition: np.ndarray, ingested_ms: np.ndarray) -> np.ndarray:
        """Kafka offsets per partition, rising with ingestion time, continuing from the previous chunk."""
        order = np.lexsort((ingested_ms, partition))
        sorted_partition = partition[order]
        first = np.searchsorted(sorted_partition, sorted_partition)
        offsets = np.empty(len(partition), np.int64)
        offsets[order] = self.offsets[sorted_partition] + np.arange(len(partition)) - first
        self.offsets += np.bincount(partition, minlength=PARTITIONS)
        return offsets
