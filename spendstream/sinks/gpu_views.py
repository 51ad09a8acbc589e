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
- ``gpu_cost_bases_minutely``: allocation and usage basis side by side, the input/output
  split and prefix-cache savings; ``gpu_cost_by_consumer_minutely``: GPU-seconds and cost
  of both bases per team, feature and customer, exact.

A later migration (issue 17) reads the allocations' usage from the ``deployment_minutes`` rollup and adds
``gpu_cost_allocated(since, until)``: ``ALLOCATION_STATEMENTS`` at the end.
"""

from __future__ import annotations

from datetime import timedelta

from spendstream.sinks.rollups import DEPLOYMENT_MINUTES, MARKS_DDL, Measure, Rollup, columns, table_ddl, watermark_sql

MONEY = "Decimal(38, 18)"

# New GpuSample fields: the columns derive from the contract (tests/test_one_shape.py checks).
SAMPLE_COLUMNS = (
    "ALTER TABLE gpu_samples ADD COLUMN IF NOT EXISTS kv_cache_utilization_max Nullable(Float64) "
    "COMMENT 'the fullest engine''s KV cache use (kv_cache_utilization is the mean)' AFTER kv_cache_utilization",
    "ALTER TABLE gpu_samples ADD COLUMN IF NOT EXISTS prompt_tokens_cached_delta Nullable(UInt64) "
    "COMMENT 'of prompt_tokens_delta, served from a prefix cache: not computed' AFTER prompt_tokens_delta",
    "ALTER TABLE gpu_samples ADD COLUMN IF NOT EXISTS prefill_seconds_delta Nullable(Float64) "
    "COMMENT 'engine-reported time requests spent in prefill' AFTER generation_tokens_per_s",
    "ALTER TABLE gpu_samples ADD COLUMN IF NOT EXISTS decode_seconds_delta Nullable(Float64) "
    "COMMENT 'engine-reported time requests spent in decode' AFTER prefill_seconds_delta",
    "ALTER TABLE gpu_samples ADD COLUMN IF NOT EXISTS gpu_busy_seconds_delta Nullable(Float64) "
    "COMMENT 'engine-reported GPU execution time: the usage basis' AFTER decode_seconds_delta",
    "ALTER TABLE gpu_samples ADD COLUMN IF NOT EXISTS dropped_readings Nullable(UInt32) "
    "COMMENT 'readings the exporter dropped from this sample as out of range' AFTER gpu_power_w",
)

DEPLOYMENT_COLUMNS = (
    "ALTER TABLE gpu_deployments ADD COLUMN IF NOT EXISTS prefill_cost_multiplier Decimal(38, 18) DEFAULT 1 "
    "COMMENT 'GPU time per computed prompt token vs per output token, where the engine reports no phase times'",
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
    ENGINE = ReplacingMergeTree(corrected_at)
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
               s.prefill_seconds_delta AS s_prefill_s, s.decode_seconds_delta AS s_decode_s,
               s.gpu_busy_seconds_delta AS s_busy_s,
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
           -- engine-reported times count only when every sample of the minute has them
           if(countIf(s_prefill_s IS NOT NULL AND s_decode_s IS NOT NULL) = count(),
              sum(ifNull(s_prefill_s, 0)), NULL) AS prefill_seconds,
           if(countIf(s_prefill_s IS NOT NULL AND s_decode_s IS NOT NULL) = count(),
              sum(ifNull(s_decode_s, 0)), NULL) AS decode_seconds,
           if(countIf(s_busy_s IS NOT NULL) = count(), sum(ifNull(s_busy_s, 0)), NULL) AS gpu_busy_seconds,
           toDecimal128(sum(p_usd_per_gpu_hour * p_gpu_count * toDecimal128(s_interval_s, 6)) / 3600, 18)
               AS gpu_cost_usd,
           tokens_per_s < any(d.idle_below_tokens_per_s) AS idle,
           any(d.prefill_cost_multiplier) AS prefill_cost_multiplier
    FROM priced
    INNER JOIN (SELECT name, idle_below_tokens_per_s, prefill_cost_multiplier FROM gpu_deployments FINAL) AS d
        ON d.name = priced.s_deployment
    GROUP BY minute, deployment
    """

# A deployment-minute's GPU cost on both bases, side by side (OpenCost's split):
# - allocation: what the GPUs cost for the time observed, idle included: sums to the bill;
# - usage: the busy part of it: DCGM/NVML utilisation where read, else the engine's own
#   GPU execution time over the observed time (capped at 1); NULL when neither is known.
# And the allocation cost split into input (prefill) and output (decode): by the engine's
# prefill/decode time where it reports it, else by computed prompt tokens weighted by the
# deployment's prefill_cost_multiplier against output tokens. Prefix-cache hits are not
# computed: they are out of the input denominator and reported as savings at that rate.
BASES = """
    CREATE OR REPLACE VIEW gpu_cost_bases_minutely AS
    WITH shares AS (
        SELECT *,
               ifNull(prompt_tokens_computed, prompt_tokens) AS input_tokens_computed,
               -- least() of NULL and 1 is 1 here: test for NULL first, unknown is not "fully busy"
               multiIf(gpu_utilization IS NOT NULL, gpu_utilization,
                       gpu_busy_seconds IS NOT NULL, least(assumeNotNull(gpu_busy_seconds) / observed_s, 1), NULL)
                   AS busy_fraction,
               multiIf(gpu_utilization IS NOT NULL, 'gpu_utilization',
                       gpu_busy_seconds IS NOT NULL, 'engine_busy_time', NULL) AS busy_source,
               multiIf(prefill_seconds + decode_seconds > 0, 'engine_phase_time',
                       input_tokens_computed + generation_tokens > 0, 'prefill_cost_multiplier', NULL)
                   AS input_share_source,
               multiIf(prefill_seconds + decode_seconds > 0, prefill_seconds / (prefill_seconds + decode_seconds),
                       input_tokens_computed + generation_tokens > 0,
                       toFloat64(prefill_cost_multiplier) * input_tokens_computed
                           / (toFloat64(prefill_cost_multiplier) * input_tokens_computed + generation_tokens),
                       NULL) AS input_share
        FROM gpu_minutely
    )
    SELECT minute, deployment, gpu_type, gpu_count, pricing, observed_s,
           toDecimal128(gpu_seconds, 6) AS gpu_seconds,
           if(busy_fraction IS NULL, NULL, toDecimal128(gpu_seconds * busy_fraction, 6)) AS busy_gpu_seconds,
           busy_fraction, busy_source,
           gpu_cost_usd AS allocation_cost_usd,
           if(busy_fraction IS NULL, NULL,
              toDecimal128(gpu_cost_usd * toDecimal128(busy_fraction, 9), 18)) AS usage_cost_usd,
           if(busy_fraction IS NULL, NULL, gpu_cost_usd - usage_cost_usd) AS idle_cost_usd,
           input_share, input_share_source,
           if(input_share IS NULL, NULL, toDecimal128(gpu_cost_usd * toDecimal128(input_share, 9), 18))
               AS input_cost_usd,
           if(input_share IS NULL, NULL, gpu_cost_usd - input_cost_usd) AS output_cost_usd,
           prompt_tokens, prompt_tokens_cached, input_tokens_computed, generation_tokens,
           if(input_tokens_computed = 0, NULL, toDecimal128(input_cost_usd * 1000000 / input_tokens_computed, 18))
               AS usd_per_1m_computed_input_tokens,
           if(generation_tokens = 0, NULL, toDecimal128(output_cost_usd * 1000000 / generation_tokens, 18))
               AS usd_per_1m_output_tokens,
           if(input_tokens_computed = 0 OR prompt_tokens_cached IS NULL, NULL,
              toDecimal128(input_cost_usd * prompt_tokens_cached / input_tokens_computed, 18)) AS cache_savings_usd
    FROM shares
    """

# Each deployment-minute's GPU-seconds and cost, on both bases, split over the teams,
# features and customers whose usage events name the deployment: the input part by their
# input tokens, the output part by their output tokens (the minute's input share decides
# the parts). Shares are truncated and the first key of the minute takes the residue, so
# each minute's parts sum to its totals to the last digit. A minute without attributed
# usage is one '__unallocated__' row holding everything.
BY_CONSUMER = """
    CREATE OR REPLACE VIEW gpu_cost_by_consumer_minutely AS
    WITH usage AS (
        SELECT toStartOfMinute(ts) AS u_minute, assumeNotNull(deployment) AS u_deployment,
               ifNull(team, '') AS u_team, ifNull(feature, '') AS u_feature, ifNull(customer, '') AS u_customer,
               sum(input_tokens) AS u_in, sum(output_tokens) AS u_out
        FROM usage_events FINAL
        WHERE deployment IS NOT NULL
        GROUP BY u_minute, u_deployment, u_team, u_feature, u_customer
    ),
    joined AS (
        SELECT b.minute AS minute, b.deployment AS deployment, b.gpu_seconds AS t_gpu_seconds,
               b.busy_gpu_seconds AS t_busy_gpu_seconds, b.allocation_cost_usd AS t_allocation,
               b.usage_cost_usd AS t_usage, b.input_share AS share,
               u.u_team AS team, u.u_feature AS feature, u.u_customer AS customer,
               u.u_in AS input_tokens, u.u_out AS output_tokens,
               sum(u.u_in) OVER (PARTITION BY b.minute, b.deployment) AS minute_in,
               sum(u.u_out) OVER (PARTITION BY b.minute, b.deployment) AS minute_out,
               row_number() OVER (PARTITION BY b.minute, b.deployment ORDER BY u.u_team, u.u_feature, u.u_customer)
                   AS rn
        FROM gpu_cost_bases_minutely AS b
        LEFT JOIN usage AS u ON u.u_minute = b.minute AND u.u_deployment = b.deployment
    ),
    weighted AS (
        SELECT *, minute_in + minute_out = 0 AS unallocated,
               multiIf(minute_in = 0, 0., minute_out = 0, 1., ifNull(share, minute_in / (minute_in + minute_out)))
                   AS s,
               toDecimal128(if(unallocated, 1., s * input_tokens / greatest(minute_in, 1)
                                                + (1 - s) * output_tokens / greatest(minute_out, 1)), 9) AS weight
        FROM joined
        WHERE NOT unallocated OR rn = 1
    ),
    raw AS (
        SELECT *, toDecimal128(t_gpu_seconds * weight, 6) AS r_gpu_seconds,
               toDecimal128(t_busy_gpu_seconds * weight, 6) AS r_busy_gpu_seconds,
               toDecimal128(t_allocation * weight, 18) AS r_allocation,
               toDecimal128(t_usage * weight, 18) AS r_usage
        FROM weighted
    )
    SELECT minute, deployment,
           if(unallocated, '__unallocated__', team) AS team, if(unallocated, '', feature) AS feature,
           if(unallocated, '', customer) AS customer, input_tokens, output_tokens,
           toDecimal128(if(rn = 1, r_gpu_seconds + t_gpu_seconds - sum(r_gpu_seconds) OVER m, r_gpu_seconds), 6)
               AS gpu_seconds,
           toDecimal128(if(rn = 1, r_busy_gpu_seconds + t_busy_gpu_seconds - sum(r_busy_gpu_seconds) OVER m,
                           r_busy_gpu_seconds), 6) AS busy_gpu_seconds,
           toDecimal128(if(rn = 1, r_allocation + t_allocation - sum(r_allocation) OVER m, r_allocation), 18)
               AS allocation_cost_usd,
           toDecimal128(if(rn = 1, r_usage + t_usage - sum(r_usage) OVER m, r_usage), 18) AS usage_cost_usd
    FROM raw
    WINDOW m AS (PARTITION BY minute, deployment)
    """

STATEMENTS: tuple[str, ...] = (*SAMPLE_COLUMNS, *DEPLOYMENT_COLUMNS, PRICES, CORRECTIONS, PRICE_PERIODS, MINUTELY,
                               BASES, BY_CONSUMER)


# -- allocation from the deployment_minutes rollup (issue 17) -----------------------------------------------
# The views above split each minute by the usage events that name its deployment, read from raw: a week of
# allocation read a week of every event. The same split from ``deployment_minutes`` (those events' tokens per
# minute and consumer, raw after its watermark) reads what self-hosted traffic holds; and
# ``gpu_cost_allocated(since, until)`` filters the samples and the usage by its minutes before the window
# functions, where a filter on ``gpu_cost_allocated_minutely`` read every sample ever stored.

SINCE, UNTIL = "{since:DateTime64(3, 'UTC')}", "{until:DateTime64(3, 'UTC')}"
IN_RANGE = f"{{m}} >= {SINCE} AND {{m}} < {UNTIL}"  # a minute {m} of since <= minute < until


def _usage(minutes: str = "1") -> str:
    """Input and output tokens per minute × deployment × team, feature, customer of the events naming a
    deployment, for the minutes ``minutes`` selects (SQL over a minute ``{m}``): the columns the raw ``usage``
    CTE of ``BY_CONSUMER`` has, equal to it row for row."""
    span = columns(DEPLOYMENT_MINUTES, "{t}", ["input_tokens", "output_tokens"],
                   where_rollup=minutes.replace("{m}", "{t}"), where_raw=minutes.replace("{m}", "toStartOfMinute({t})"))
    return (f"SELECT period AS u_minute, assumeNotNull(deployment) AS u_deployment, ifNull(team, '') AS u_team, "
            f"ifNull(feature, '') AS u_feature, ifNull(customer, '') AS u_customer, "
            f"sum(input_tokens) AS u_in, sum(output_tokens) AS u_out FROM {span} "
            f"GROUP BY u_minute, u_deployment, u_team, u_feature, u_customer")


def _minutely(minutes: str) -> str:
    """``gpu_minutely``'s query for the minutes ``minutes`` selects: only their samples are read."""
    body = MINUTELY.split(" AS\n", 1)[1]
    samples = f"(SELECT * FROM gpu_samples FINAL WHERE {minutes.replace('{m}', 'toStartOfMinute(ts)')}) AS s"
    return f"({body.replace('FROM gpu_samples AS s FINAL', f'FROM {samples}')})"


# Migration 4's allocation (one share per consumer by all its tokens), its usage given by the caller.
_ALLOCATED = """
    WITH usage AS ({usage}),
    joined AS (
        SELECT g.minute AS minute, g.deployment AS deployment, g.gpu_cost_usd AS gpu_cost_usd,
               u.u_team AS team, u.u_feature AS feature, u.u_customer AS customer, u.u_in + u.u_out AS tokens,
               sum(u.u_in + u.u_out) OVER (PARTITION BY g.minute, g.deployment) AS minute_tokens,
               row_number() OVER (PARTITION BY g.minute, g.deployment ORDER BY u.u_team, u.u_feature, u.u_customer)
                   AS rn
        FROM {minutely} AS g
        LEFT JOIN usage AS u ON u.u_minute = g.minute AND u.u_deployment = g.deployment
    ),
    shares AS (
        SELECT *, if(minute_tokens = 0, gpu_cost_usd, toDecimal128(gpu_cost_usd * tokens / minute_tokens, 18)) AS raw
        FROM joined
    )
    SELECT minute, deployment,
           if(minute_tokens = 0, '__unallocated__', team) AS team,
           if(minute_tokens = 0, '', feature) AS feature,
           if(minute_tokens = 0, '', customer) AS customer,
           tokens,
           toDecimal128(if(rn = 1, raw + gpu_cost_usd - sum(raw) OVER (PARTITION BY minute, deployment), raw), 18)
               AS allocated_cost_usd
    FROM shares
    WHERE minute_tokens = 0 AND rn = 1 OR minute_tokens > 0
    """

ALLOCATED_MINUTELY = ("CREATE OR REPLACE VIEW gpu_cost_allocated_minutely AS"
                      + _ALLOCATED.format(usage=_usage(), minutely="gpu_minutely"))
ALLOCATED_RANGE = ("CREATE OR REPLACE VIEW gpu_cost_allocated AS"
                   + _ALLOCATED.format(usage=_usage(IN_RANGE), minutely=_minutely(IN_RANGE)))
_RAW_USAGE = BY_CONSUMER.split("WITH usage AS (", 1)[1].split("\n    ),\n    joined AS (", 1)[0]
BY_CONSUMER_ROLLED = BY_CONSUMER.replace(_RAW_USAGE, _usage())

ALLOCATION_STATEMENTS: tuple[str, ...] = (ALLOCATED_MINUTELY, ALLOCATED_RANGE, BY_CONSUMER_ROLLED)


# -- allocated cost per hour as a rollup (issue 17) -----------------------------------------------------------
# A minute's split depends on that minute's GPU samples, prices and usage only, so the maintainer keeps it per
# hour × deployment × team (``gpu_allocated_hours``), recomputed from the allocation above when a minute of the
# hour changes on either side: usage events mark ``rollup_marks`` as for every grain, GPU samples (the writer after
# they are durable; a materialized view on every insert) and price periods (sync_prices, gpu-reprice) mark
# ``gpu_marks``. Money is exact decimals, so an hour's sum per team is the sum of the minutes' truncated shares
# to the last digit. ``gpu_allocated_hourly(since, until)`` reads the whole hours of its range before the grain's
# watermark from it and the rest (the partial hours at its ends, the open hour, a pending one) live.

GPU_MARKS = MARKS_DDL.replace("rollup_marks", "gpu_marks")  # the same table as the usage events' marks
# The safety nets, as rollup_marks_mv is for usage events: every insert of samples, or of price periods (which
# reprice their deployment's samples from the period's start), marks the minutes whose GPU cost it can change.
GPU_MARKS_MV = """
    CREATE MATERIALIZED VIEW IF NOT EXISTS gpu_marks_mv TO gpu_marks
    AS SELECT DISTINCT toStartOfMinute(ts) AS minute FROM gpu_samples
    """
GPU_PRICE_MARKS_MV = """
    CREATE MATERIALIZED VIEW IF NOT EXISTS gpu_price_marks_mv TO gpu_marks
    AS SELECT DISTINCT toStartOfMinute(s.ts) AS minute FROM gpu_prices AS p
    INNER JOIN (SELECT deployment, ts FROM gpu_samples) AS s ON s.deployment = p.name
    WHERE s.ts >= p.effective_from
    """

_HOUR_SOURCE = ("SELECT toStartOfHour(minute) AS p, deployment, team, sum(tokens) AS tokens, "
                "sum(allocated_cost_usd) AS allocated_cost_usd FROM ({allocated}) GROUP BY p, deployment, team")
_WHOLE = "{m} >= {since} AND {m} < {until}"
GPU_ALLOCATED_HOURS = Rollup(
    "gpu_allocated_hours", "hour", "toStartOfHour(ts)", timedelta(hours=1), ("deployment", "team"),
    measures=(Measure("tokens", "UInt64", "", "sum(tokens)"),
              Measure("allocated_cost_usd", MONEY, "", "sum(allocated_cost_usd)")),
    key_types=(("deployment", "LowCardinality(String)"), ("team", "LowCardinality(String)")),
    extra_marks="gpu_marks",
    source=_HOUR_SOURCE.format(allocated=_ALLOCATED.format(usage=_usage(_WHOLE), minutely=_minutely(_WHOLE))))
GPU_GRAINS = (GPU_ALLOCATED_HOURS,)  # migration 33's

# The grain's hours [first_hour, hours_end): every minute of them in since <= minute < until, before its watermark.
_FIRST_HOUR = f"toStartOfHour({SINCE} - INTERVAL 1 MILLISECOND) + INTERVAL 1 HOUR"
_LIVE = f"({{m}} >= {SINCE} AND {{m}} < least(first_hour, {UNTIL}) OR {{m}} >= hours_end AND {{m}} < {UNTIL})"
# (each watermark computed once, in the WITH clause: ClickHouse analyses every copy of a scalar subquery)
ALLOCATED_HOURLY = f"""
    CREATE OR REPLACE VIEW gpu_allocated_hourly AS
    WITH ({watermark_sql(GPU_ALLOCATED_HOURS)}) AS gpu_allocated_hours_watermark,
         ({watermark_sql(DEPLOYMENT_MINUTES)}) AS deployment_minutes_watermark,
         {_FIRST_HOUR} AS first_hour,
         greatest(first_hour, least(toStartOfHour({UNTIL} + INTERVAL 59999 MILLISECOND),
                                    gpu_allocated_hours_watermark)) AS hours_end
    SELECT hour, deployment, team, tokens, allocated_cost_usd FROM gpu_allocated_hours FINAL
    WHERE hour >= first_hour AND hour < hours_end
    UNION ALL
    SELECT toStartOfHour(minute) AS hour, deployment, team, sum(tokens) AS tokens,
           sum(allocated_cost_usd) AS allocated_cost_usd
    FROM ({_ALLOCATED.format(usage=_usage(_LIVE), minutely=_minutely(_LIVE)).replace(
        watermark_sql(DEPLOYMENT_MINUTES), "deployment_minutes_watermark")})
    GROUP BY hour, deployment, team
    """

# The same for a dashboard whose feature and customer variables filter the allocation (Array(String) parameters,
# '__all__' for All): at All both, the hours as above; else no hour from the grain (it keeps neither key), the whole
# range split live and its consumers filtered after the split, as the panel filtered gpu_cost_allocated. One plan:
# a second branch under a constant WHERE paid its full fixed cost (BENCHMARKS.md, s19).
_SELECTED = "(has({{{name}s:Array(String)}}, '__all__') OR has({{{name}s:Array(String)}}, ifNull({name}, '(none)')))"
ALLOCATED_HOURLY_SELECTED = (
    ALLOCATED_HOURLY.replace("VIEW gpu_allocated_hourly AS", "VIEW gpu_allocated_hourly_selected AS")
    .replace("WITH (", "WITH has({features:Array(String)}, '__all__') AND has({customers:Array(String)}, '__all__') "
                       "AS by_hour,\n         (", 1)
    .replace("greatest(first_hour, least(", "if(NOT by_hour, first_hour, greatest(first_hour, least(", 1)
    .replace("gpu_allocated_hours_watermark)) AS hours_end", "gpu_allocated_hours_watermark))) AS hours_end", 1)
    .replace("    GROUP BY hour, deployment, team\n",
             f"    WHERE {_SELECTED.format(name='feature')} AND {_SELECTED.format(name='customer')}\n"
             "    GROUP BY hour, deployment, team\n"))

HOUR_STATEMENTS: tuple[str, ...] = (GPU_MARKS, GPU_MARKS_MV, GPU_PRICE_MARKS_MV, table_ddl(GPU_ALLOCATED_HOURS),
                                    ALLOCATED_HOURLY, ALLOCATED_HOURLY_SELECTED)
