"""Vectorised pricing against genai-prices called per event, on the same events, in one run.

    .venv/bin/python bench/pricing.py [--events 1000000] [--batch 100000] [--per-event-sample 20000]

Events: token counts from the bundled Azure conversation trace (cycled), spread
over one hour, with a generated mix of 9 models from 4 providers (flat, tiered
and off-peak prices), cache reads and writes, reasoning tokens, 5 % batch mode,
and 200 customers of which one has a negotiated discount (an override), seeded.
DeepSeek publishes no batch discount, so its calls are all realtime.

Reports events/s of ``Pricer.price_columns`` (one core: numpy and Arrow run
single-threaded here), of genai-prices' ``calc_price`` per event on a sample,
and checks both give the same total on that sample, to the last digit.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
from genai_prices import Usage, data_snapshot

from spendstream.demo.traffic import load_trace
from spendstream.pricing import Pricer, UsageColumns, load_overrides

MODELS = [  # provider, model, share
    ("openai", "gpt-4o-mini", 0.30), ("openai", "gpt-4o", 0.15), ("openai", "gpt-4.1", 0.10),
    ("openai", "o4-mini", 0.08), ("anthropic", "claude-3-5-haiku-20241022", 0.12),
    ("anthropic", "claude-sonnet-4-20250514", 0.10), ("google", "gemini-2.5-pro", 0.07),
    ("google", "gemini-2.5-flash", 0.05), ("deepseek", "deepseek-chat", 0.03),
]
START = datetime(2025, 8, 1, 15, 30, tzinfo=timezone.utc)  # the hour crosses DeepSeek's 16:30 off-peak start
OVERRIDES = """\
overrides:
  - id: customer-7-enterprise
    provider: openai
    model: "gpt-4*"
    customer: customer-7
    effective_from: 2025-01-01
    discount_percent: 18
"""


def make_columns(n: int, seed: int = 1) -> UsageColumns:
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    trace = load_trace()
    picks = rng.choices(range(len(MODELS)), weights=[m[2] for m in MODELS], k=n)
    inputs = np.array([trace[i % len(trace)].input_tokens for i in range(n)], dtype=np.int64)
    outputs = np.array([trace[i % len(trace)].output_tokens for i in range(n)], dtype=np.int64)
    cached = (inputs * np_rng.uniform(0, 0.6, n)).astype(np.int64)
    writes = ((inputs - cached) * np_rng.uniform(0, 0.2, n)).astype(np.int64)
    writes_1h = (writes * (np_rng.random(n) < 0.2)).astype(np.int64)
    reasoning = (outputs * np_rng.uniform(0, 0.5, n)).astype(np.int64)
    is_openai = np.array([MODELS[p][0] == "openai" for p in picks])
    writes[is_openai] = 0  # OpenAI reports no cache writes
    writes_1h[is_openai] = 0
    has_batch = np.array([MODELS[p][0] != "deepseek" for p in picks])
    ts_ms = int(START.timestamp() * 1000) + np.sort(np_rng.integers(0, 3_600_000, n))
    return UsageColumns(
        provider=pa.array([MODELS[p][0] for p in picks]), model=pa.array([MODELS[p][1] for p in picks]),
        ts_ms=ts_ms, mode=pa.array(np.where((np_rng.random(n) < 0.05) & has_batch, "batch", "realtime")),
        service_tier=pa.nulls(n, pa.string()), team=pa.nulls(n, pa.string()),
        customer=pa.array([f"customer-{c}" for c in np_rng.integers(0, 200, n)]),
        input_tokens=inputs, cached_input_tokens=cached, cache_write_tokens=writes, cache_write_1h_tokens=writes_1h,
        output_tokens=outputs, reasoning_tokens=reasoning)


def per_event_genai(cols: UsageColumns, indices: list[int]) -> tuple[float, Decimal]:
    """genai-prices' own calculation, one call per event: (seconds, total)."""
    snapshot = data_snapshot.get_snapshot()
    providers, models = cols.provider.to_pylist(), cols.model.to_pylist()
    total = Decimal(0)
    t0 = time.perf_counter()
    for i in indices:
        _, model = snapshot.find_provider_model(models[i], None, providers[i], None)
        at = datetime.fromtimestamp(int(cols.ts_ms[i]) // 60_000 * 60, timezone.utc)
        usage = Usage(input_tokens=int(cols.input_tokens[i]), cache_read_tokens=int(cols.cached_input_tokens[i]),
                      cache_write_tokens=int(cols.cache_write_tokens[i]),
                      cache_write_1h_tokens=int(cols.cache_write_1h_tokens[i]),
                      output_tokens=int(cols.output_tokens[i]), output_reasoning_tokens=int(cols.reasoning_tokens[i]))
        total += model.get_prices(at).calc_price(usage)["total_price"]
    return time.perf_counter() - t0, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--per-event-sample", type=int, default=20_000)
    args = parser.parse_args()

    cols = make_columns(args.events)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overrides.yaml"
        path.write_text(OVERRIDES)
        pricer = Pricer(load_overrides(path))
    batches = [_slice(cols, i, min(i + args.batch, args.events)) for i in range(0, args.events, args.batch)]
    pricer.price_columns(batches[0])  # warm up: the group cache and numpy

    timings = []
    for batch in batches:
        t0 = time.perf_counter()
        pricer.price_columns(batch)
        timings.append(time.perf_counter() - t0)
    vector_s = sum(timings)
    vector_rate = args.events / vector_s

    # Same events through genai-prices one by one. It knows neither our overrides nor the batch
    # rule (its batch prices start 2026-10-14), so compare on realtime calls without an override.
    rng = random.Random(3)
    customers, modes = cols.customer.to_pylist(), cols.mode.to_pylist()
    candidates = [i for i in range(args.events) if customers[i] != "customer-7" and modes[i] == "realtime"]
    sample = sorted(rng.sample(candidates, min(args.per_event_sample, len(candidates))))
    genai_s, genai_total = per_event_genai(cols, sample)
    genai_rate = len(sample) / genai_s
    sample_cols = _take(cols, sample)
    ours = sum(Pricer().price_columns(sample_cols).total_cost.to_pylist(), Decimal(0))

    print(f"events {args.events:,} in batches of {args.batch:,}; {len(MODELS)} models, 200 customers, 1 override")
    print(f"vectorised price_columns: {vector_rate:,.0f} events/s "
          f"(batch median {statistics.median(timings) * 1000:.1f} ms)")
    print(f"genai-prices per event:   {genai_rate:,.0f} events/s (sample of {len(sample):,})")
    print(f"ratio: {vector_rate / genai_rate:,.0f}x")
    print(f"sample total: vectorised ${ours} vs per-event ${genai_total} -> "
          f"{'identical' if ours == genai_total.quantize(Decimal('1e-18')) else 'DIFFERENT'}")


def _slice(cols: UsageColumns, start: int, stop: int) -> UsageColumns:
    return _take(cols, slice(start, stop))


def _take(cols: UsageColumns, index) -> UsageColumns:
    values = {}
    for name in UsageColumns.__dataclass_fields__:
        column = getattr(cols, name)
        if column is None:
            values[name] = None
        elif isinstance(column, pa.Array):
            values[name] = column[index] if isinstance(index, slice) else column.take(pa.array(index))
        else:
            values[name] = column[index]
    return UsageColumns(**values)


if __name__ == "__main__":
    main()
