"""GPU cost tables and views of the GPU exporter II migration (one migration, appended last).

Migration 4 made ``gpu_samples``, ``gpu_deployments`` and the first views; this
module holds what came with the exporter's second round, so migrations.py lists
it in one line:

- ``gpu_prices``: effective-dated prices, one row per deployment and period start;
  ``gpu_price_periods`` adds the undated price of ``gpu_deployments`` (from the
  epoch) for deployments that have no dated one.
- ``gpu_minutely`` again, now priced per sample at the period in force at the
  sample's time, with GPU-seconds and the cached/computed prompt split.
- ``gpu_cost_corrections``: what ``spendstream gpu-reprice`` changed, day by day.
"""

from __future__ import annotations

MONEY = "Decimal(38, 18)"

# New GpuSample fields: the columns derive from the contract (tests/test_one_shape.py checks).
SAMPLE_COLUMNS = (
    "ALTER TABLE gpu_samples ADD COLUMN IF NOT EXISTS kv_cache_utilization_max Nullable(Float64) "
    "COMMENT 'the fullest engine''s KV cache use (kv_cache_utilization is the mean)' AFTER kv_cache_utilization",
    "ALTER TABLE gpu_samples ADD COLUMN IF NOT EXISTS prompt_tokens_cached_delta Nullable(UInt64) "
    "COMMENT 'of prompt_tokens_delta, served from a prefix cache: not computed' AFTER prompt_tokens_delta",
    "ALTER TABLE gpu_samples ADD COLUMN IF NOT EXISTS dropped_readings Nullable(UInt32) "
    "COMMENT 'readings the exporter dropped from this sample as out of range' AFTER gpu_power_w",
)

PRICES = f"""
    CREATE TABLE IF NOT EXISTS gpu_prices (
        name String,
        effective_from DateTime64(3, 'UTC') COMMENT 'in force from here until the next period of the name',
        gpu_type String,
        gpu_count UInt32,
        usd_per_gpu_hour {MONEY},
        pricing LowCardinality(String),
        loaded_at DateTime64(3, 'UTC') COMMENT 'a newer row of the same period replaces it: gpu-reprice only'
    )
    ENGINE = ReplacingMergeTree(loaded_at)
    ORDER BY (name, effective_from)
    """

CORRECTIONS = f"""
    CREATE TABLE IF NOT EXISTS gpu_cost_corrections (
        reprice_id String,
        day Date,
        deployment LowCardinality(String),
        old_cost_usd {MONEY},
        new_cost_usd {MONEY},
        corrected_at DateTime64(3, 'UTC')
    )
    ENGINE = MergeTree
    ORDER BY (deployment, day, reprice_id)
    """

PRICE_PERIODS = """
    CREATE OR REPLACE VIEW gpu_price_periods AS
    SELECT name, effective_from, gpu_type, gpu_count, usd_per_gpu_hour, pricing FROM gpu_prices FINAL
    UNION ALL
    SELECT name, toDateTime64(0, 3, 'UTC') AS effective_from, gpu_type, gpu_count, usd_per_gpu_hour, pricing
    FROM gpu_deployments FINAL
    WHERE name NOT IN (SELECT name FROM gpu_prices)
    """

# Each sample at the price period in force at its time (ASOF: the latest start <= ts).
# Cost is summed as usd·s/h and divided once per minute, so a minute's cost is exact.
MINUTELY = """
    CREATE OR REPLACE VIEW gpu_minutely AS
    WITH priced AS (
        SELECT s.ts AS s_ts, s.deployment AS s_deployment, s.interval_s AS s_interval_s,
               s.prompt_tokens_delta AS s_prompt, s.generation_tokens_delta AS s_generation,
               s.prompt_tokens_cached_delta AS s_cached,
               s.kv_cache_utilization AS s_kv, s.kv_cache_utilization_max AS s_kv_max,
               s.waiting_requests AS s_waiting, s.gpu_utilization AS s_gpu_utilization,
               p.gpu_type AS p_gpu_type, p.gpu_count AS p_gpu_count, p.pricing AS p_pricing,
               p.usd_per_gpu_hour AS p_usd_per_gpu_hour
        FROM gpu_samples AS s FINAL
        ASOF INNER JOIN gpu_price_periods AS p ON s.deployment = p.name AND s.ts >= p.effective_from
    )
    SELECT toStartOfMinute(s_ts) AS minute, s_deployment AS deployment,
           any(p_gpu_type) AS gpu_type, max(p_gpu_count) AS gpu_count, any(p_pricing) AS pricing,
           sum(s_interval_s) AS observed_s,
           sum(s_interval_s * p_gpu_count) AS gpu_seconds,
           sum(ifNull(s_prompt, 0)) AS prompt_tokens,
           sum(ifNull(s_generation, 0)) AS generation_tokens,
           prompt_tokens + generation_tokens AS tokens,
           tokens / observed_s AS tokens_per_s,
           countIf(s_cached IS NOT NULL) = count() AS cache_split_known,
           if(cache_split_known, sum(ifNull(s_cached, 0)), NULL) AS prompt_tokens_cached,
           if(cache_split_known, prompt_tokens - sum(ifNull(s_cached, 0)), NULL) AS prompt_tokens_computed,
           avg(s_kv) AS kv_cache_utilization,
           max(ifNull(s_kv_max, s_kv)) AS kv_cache_utilization_max,
           avg(s_waiting) AS waiting_requests,
           avg(s_gpu_utilization) AS gpu_utilization,
           toDecimal128(sum(p_usd_per_gpu_hour * p_gpu_count * toDecimal128(s_interval_s, 6)) / 3600, 18)
               AS gpu_cost_usd,
           tokens_per_s < any(d.idle_below_tokens_per_s) AS idle
    FROM priced
    INNER JOIN (SELECT name, idle_below_tokens_per_s FROM gpu_deployments FINAL) AS d ON d.name = priced.s_deployment
    GROUP BY minute, deployment
    """

STATEMENTS: tuple[str, ...] = (*SAMPLE_COLUMNS, PRICES, CORRECTIONS, PRICE_PERIODS, MINUTELY)
