"""Schema, created and migrated by the project itself, idempotently, on both backends.

Each migration is a numbered list of statements. Every statement is idempotent
on its own (IF NOT EXISTS), so a crash between a statement and its bookkeeping
row only means it runs again harmlessly. Add new migrations at the end; never
edit one that has shipped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from spendstream.pricing.fees import FEE_KINDS
from spendstream.pricing.rates import KINDS
from spendstream.sinks import billing, gpu_views, key_lists, live_slices, reader_views, rollups, shapes
from spendstream.sinks.regrain import regrain
from spendstream.sinks.relayout import relayout
from spendstream.sinks.store import Store

log = logging.getLogger(__name__)

MONEY = "Decimal(38, 18)"
CALL_COLUMNS = ("web_search_calls", "web_fetch_calls", "file_search_calls", "code_execution_calls")


@dataclass(frozen=True, slots=True)
class Migration:
    """Statements are SQL, or a step ``(store, run)`` for what one statement cannot say (see relayout)."""

    version: int
    name: str
    statements: tuple[str | Callable[[Store, Callable[[str], None]], None], ...]


# The provider's own cost is kept as the text it sent (the contract's provider_cost_usd) and
# as the exact number that text says (provider_cost). Which cost is billed is decided per
# event by the policy the worker stored it under (billing_policy), by the engine, so a
# re-priced row (reprice.py re-inserts it) is billed again by the same rule.
def _cost_view(name: str, bucket: str) -> str:
    """Showback/chargeback rollup per time bucket and attribution key (exact: reads FINAL)."""
    return f"""
        CREATE OR REPLACE VIEW {name} AS
        SELECT {bucket} AS period, team, feature, customer, environment, provider, model,
               uniqExact(request_id) AS requests,
               count() AS attempts,
               uniqExactIf(request_id, status = 'ok') AS successful_requests,
               sum(input_tokens) AS input_tokens,
               sum(output_tokens) AS output_tokens,
               sumIf(total_cost, priced) AS cost_usd,
               sumIf(list_cost, priced) AS list_cost_usd,
               countIf(NOT priced) AS unpriced_attempts
        FROM usage_events FINAL
        GROUP BY period, team, feature, customer, environment, provider, model
        """


_UNIT_COSTS = """
    CREATE OR REPLACE VIEW unit_costs_daily AS
    SELECT period AS day, team, feature,
           sum(cost_usd) AS cost_usd,
           sum(requests) AS requests,
           sum(successful_requests) AS successful_requests,
           sum(input_tokens) + sum(output_tokens) AS tokens,
           if(requests = 0, NULL, cost_usd / requests) AS cost_per_request,
           if(successful_requests = 0, NULL, cost_usd / successful_requests) AS cost_per_successful_request,
           if(tokens = 0, NULL, cost_usd * 1000 / tokens) AS cost_per_1k_tokens
    FROM cost_daily
    GROUP BY day, team, feature
    """


_GPU_MINUTELY = """
    CREATE OR REPLACE VIEW gpu_minutely AS
    SELECT toStartOfMinute(s.ts) AS minute, s.deployment AS deployment,
           any(d.gpu_type) AS gpu_type, any(d.gpu_count) AS gpu_count, any(d.pricing) AS pricing,
           sum(s.interval_s) AS observed_s,
           sum(ifNull(s.prompt_tokens_delta, 0)) AS prompt_tokens,
           sum(ifNull(s.generation_tokens_delta, 0)) AS generation_tokens,
           prompt_tokens + generation_tokens AS tokens,
           tokens / observed_s AS tokens_per_s,
           avg(s.kv_cache_utilization) AS kv_cache_utilization,
           avg(s.waiting_requests) AS waiting_requests,
           avg(s.gpu_utilization) AS gpu_utilization,
           toDecimal128(any(d.usd_per_gpu_hour) * any(d.gpu_count) * toDecimal128(sum(s.interval_s), 6) / 3600, 18)
               AS gpu_cost_usd,
           tokens_per_s < any(d.idle_below_tokens_per_s) AS idle
    FROM gpu_samples AS s FINAL
    INNER JOIN (SELECT * FROM gpu_deployments FINAL) AS d ON d.name = s.deployment
    GROUP BY minute, deployment
    """

_GPU_UNIT_COSTS = """
    CREATE OR REPLACE VIEW gpu_unit_costs_minutely AS
    SELECT minute, deployment, gpu_cost_usd, tokens, prompt_tokens, generation_tokens,
           if(tokens = 0, NULL, toDecimal128(gpu_cost_usd * 1000000 / tokens, 18)) AS usd_per_1m_tokens,
           if(prompt_tokens = 0, NULL, toDecimal128(gpu_cost_usd * 1000000 / prompt_tokens, 18))
               AS usd_per_1m_prompt_tokens,
           if(generation_tokens = 0, NULL, toDecimal128(gpu_cost_usd * 1000000 / generation_tokens, 18))
               AS usd_per_1m_generation_tokens,
           kv_cache_utilization, waiting_requests, idle,
           if(idle, gpu_cost_usd, toDecimal128(0, 18)) AS idle_cost_usd
    FROM gpu_minutely
    """

_GPU_DAILY = """
    CREATE OR REPLACE VIEW gpu_cost_daily AS
    SELECT toDate(minute) AS day, deployment,
           sum(gpu_cost_usd) AS gpu_cost_usd, sum(idle_cost_usd) AS idle_cost_usd, sum(tokens) AS tokens,
           if(tokens = 0, NULL, toDecimal128(gpu_cost_usd * 1000000 / tokens, 18)) AS usd_per_1m_tokens
    FROM gpu_unit_costs_minutely
    GROUP BY day, deployment
    """

# Each minute's GPU cost split over the teams/features/customers whose usage events
# name the deployment, by their share of its tokens; the first key of the minute takes
# the rounding residue, so the parts add up to the cost exactly. A minute without
# attributed usage is one '__unallocated__' row.
_GPU_ALLOCATED = """
    CREATE OR REPLACE VIEW gpu_cost_allocated_minutely AS
    WITH usage AS (
        SELECT toStartOfMinute(ts) AS minute, assumeNotNull(deployment) AS deployment,
               ifNull(team, '') AS team, ifNull(feature, '') AS feature, ifNull(customer, '') AS customer,
               sum(input_tokens + output_tokens) AS tokens
        FROM usage_events FINAL
        WHERE deployment IS NOT NULL
        GROUP BY minute, deployment, team, feature, customer
    ),
    joined AS (
        SELECT g.minute AS minute, g.deployment AS deployment, g.gpu_cost_usd AS gpu_cost_usd,
               u.team AS team, u.feature AS feature, u.customer AS customer, u.tokens AS tokens,
               sum(u.tokens) OVER (PARTITION BY g.minute, g.deployment) AS minute_tokens,
               row_number() OVER (PARTITION BY g.minute, g.deployment ORDER BY u.team, u.feature, u.customer) AS rn
        FROM gpu_minutely AS g
        LEFT JOIN usage AS u ON u.minute = g.minute AND u.deployment = g.deployment
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


# What failed attempts cost: every attempt whose status is not ok was paid for.
_RETRY_WASTE = """
    CREATE OR REPLACE VIEW retry_waste_daily AS
    SELECT toDate(ts) AS day, team, feature,
           count() AS attempts,
           countIf(status != 'ok') AS failed_attempts,
           countIf(attempt > 1) AS retries,
           sumIf(total_cost, status != 'ok' AND priced) AS wasted_cost_usd,
           sumIf(total_cost, priced) AS cost_usd,
           countIf(status = 'rate_limited') AS rate_limited,
           countIf(status = 'error') AS errors,
           countIf(status = 'timeout') AS timeouts,
           countIf(status = 'invalid_output') AS invalid_outputs
    FROM usage_events FINAL
    GROUP BY day, team, feature
    """

# Spend in the last 7 days against the 7 before, per team/feature/customer.
_MOVERS = """
    CREATE OR REPLACE VIEW spend_movers_weekly AS
    SELECT team, feature, customer,
           sumIf(total_cost, ts >= now() - INTERVAL 7 DAY) AS this_week_usd,
           sumIf(total_cost, ts < now() - INTERVAL 7 DAY) AS last_week_usd,
           this_week_usd - last_week_usd AS change_usd,
           if(last_week_usd = 0, NULL, toFloat64(this_week_usd / last_week_usd) - 1) AS change_ratio
    FROM usage_events FINAL
    WHERE priced AND ts >= now() - INTERVAL 14 DAY
    GROUP BY team, feature, customer
    """

_DEAD_LETTERS = """
    CREATE OR REPLACE VIEW dead_letters_by_reason AS
    SELECT toDate(received_at) AS day, source_topic AS topic,
           splitByString(': ', reason)[1] AS kind,
           reason, count() AS dead_letters, max(received_at) AS last_seen
    FROM dead_letters FINAL
    GROUP BY day, topic, kind, reason
    """


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "usage_events and dead_letters", (
        # One row per distinct event_id: ReplacingMergeTree collapses re-deliveries
        # (same key) on merge; exact queries read it with FINAL.
        f"""
        CREATE TABLE IF NOT EXISTS usage_events (
            event_id String,
            ts DateTime64(3, 'UTC'),
            request_id String,
            attempt UInt32,
            provider LowCardinality(String),
            model LowCardinality(String),
            deployment LowCardinality(Nullable(String)),
            mode LowCardinality(String),
            service_tier LowCardinality(Nullable(String)),
            input_tokens UInt64,
            cached_input_tokens UInt64,
            cache_write_tokens UInt64,
            output_tokens UInt64,
            reasoning_tokens UInt64,
            tokens_estimated Bool,
            latency_ms Nullable(Float64),
            ttft_ms Nullable(Float64),
            status LowCardinality(String),
            http_status Nullable(UInt16),
            team LowCardinality(Nullable(String)),
            feature LowCardinality(Nullable(String)),
            customer Nullable(String),
            environment LowCardinality(Nullable(String)),
            user_hash Nullable(String),
            tags Map(String, String),
            prefix_fingerprint Nullable(String),
            prefix_tokens Nullable(UInt64),
            max_tokens Nullable(UInt64),
            service LowCardinality(Nullable(String)),
            extra String COMMENT 'fields unknown to the schema version, as JSON',
            priced Bool,
            unpriced_reason Nullable(String),
            catalog LowCardinality(String),
            catalog_version LowCardinality(String),
            price_model_id LowCardinality(Nullable(String)),
            price_provider_id LowCardinality(Nullable(String)),
            input_price_per_mtok Nullable({MONEY}),
            cached_input_price_per_mtok Nullable({MONEY}),
            cache_write_price_per_mtok Nullable({MONEY}),
            output_price_per_mtok Nullable({MONEY}),
            input_cost Nullable({MONEY}),
            output_cost Nullable({MONEY}),
            total_cost Nullable({MONEY}),
            source_topic LowCardinality(String),
            source_partition UInt32,
            source_offset UInt64,
            ingested_at DateTime64(3, 'UTC')
        )
        ENGINE = ReplacingMergeTree(ingested_at)
        PARTITION BY toYYYYMM(ts)
        ORDER BY event_id
        """,
        # Keyed by where the bytes came from, so a replayed record is stored once.
        """
        CREATE TABLE IF NOT EXISTS dead_letters (
            received_at DateTime64(3, 'UTC'),
            source_topic LowCardinality(String),
            source_partition UInt32,
            source_offset UInt64,
            item_index Int32 COMMENT '-1 when the whole record was unreadable',
            event_id Nullable(String),
            reason String,
            raw String
        )
        ENGINE = ReplacingMergeTree(received_at)
        ORDER BY (source_topic, source_partition, source_offset, item_index)
        """,
    )),
    Migration(2, "pricing engine columns, alerts, cost_corrections", (
        "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS cache_write_1h_tokens UInt64 DEFAULT 0 "
        "AFTER cache_write_tokens",
        "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS tokenizer LowCardinality(Nullable(String)) "
        "AFTER tokens_estimated",
        "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS overrides_version LowCardinality(Nullable(String)) "
        "AFTER catalog_version",
        "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS price_source LowCardinality(Nullable(String)) "
        "AFTER price_provider_id",
        "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS override_id LowCardinality(Nullable(String)) "
        "AFTER price_source",
        f"ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS cache_write_1h_price_per_mtok Nullable({MONEY}) "
        "AFTER cache_write_price_per_mtok",
        f"ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS reasoning_price_per_mtok Nullable({MONEY}) "
        "AFTER output_price_per_mtok",
        f"ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS list_cost Nullable({MONEY}) COMMENT "
        "'the catalog list price; total_cost is after overrides' AFTER total_cost",
        *(f"ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS list_{kind}_price_per_mtok Nullable({MONEY}) "
          "AFTER list_cost" for kind in reversed(KINDS)),
        # One row per alert state change; the dedup key makes "once per model per day" exact.
        f"""
        CREATE TABLE IF NOT EXISTS alerts (
            created_at DateTime64(3, 'UTC'),
            kind LowCardinality(String),
            severity LowCardinality(String),
            state LowCardinality(String),
            subject String,
            window_start DateTime64(3, 'UTC'),
            window_end DateTime64(3, 'UTC'),
            observed Nullable({MONEY}),
            expected Nullable({MONEY}),
            dedup_key String,
            message String
        )
        ENGINE = ReplacingMergeTree(created_at)
        ORDER BY (dedup_key, state)
        """,
        # What `spendstream reprice` changed: both totals stay visible.
        f"""
        CREATE TABLE IF NOT EXISTS cost_corrections (
            reprice_id String,
            repriced_at DateTime64(3, 'UTC'),
            event_id String,
            ts DateTime64(3, 'UTC'),
            old_priced Bool,
            new_priced Bool,
            old_total_cost Nullable({MONEY}),
            new_total_cost Nullable({MONEY}),
            old_price_source Nullable(String),
            new_price_source Nullable(String),
            old_overrides_version Nullable(String),
            new_overrides_version Nullable(String)
        )
        ENGINE = ReplacingMergeTree(repriced_at)
        ORDER BY (reprice_id, event_id)
        """,
    )),
    Migration(3, "attribution guard column and showback/chargeback views", (
        "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS folded_tags Array(String) COMMENT "
        "'tag keys whose value was stored as __other__ by the cardinality guard' AFTER tags",
        _cost_view("cost_hourly", "toStartOfHour(ts)"),
        _cost_view("cost_daily", "toDate(ts)"),
        _cost_view("cost_monthly", "toStartOfMonth(ts)"),
        _UNIT_COSTS,
    )),
    Migration(4, "self-hosted GPUs: samples, deployments, unit cost, idle cost and allocation views", (
        """
        CREATE TABLE IF NOT EXISTS gpu_samples (
            sample_id String,
            ts DateTime64(3, 'UTC') COMMENT 'end of the scrape interval',
            interval_s Float64,
            deployment LowCardinality(String),
            engine LowCardinality(String),
            engine_version LowCardinality(Nullable(String)),
            model LowCardinality(Nullable(String)),
            gpu_type LowCardinality(Nullable(String)),
            gpu_count Nullable(UInt32),
            prompt_tokens_delta Nullable(UInt64),
            generation_tokens_delta Nullable(UInt64),
            prompt_tokens_per_s Nullable(Float64),
            generation_tokens_per_s Nullable(Float64),
            kv_cache_utilization Nullable(Float64),
            running_requests Nullable(Float64),
            waiting_requests Nullable(Float64),
            prefix_cache_hit_rate Nullable(Float64),
            gpu_utilization Nullable(Float64),
            gpu_memory_used_bytes Nullable(Float64),
            gpu_power_w Nullable(Float64),
            ingested_at DateTime64(3, 'UTC')
        )
        ENGINE = ReplacingMergeTree(ingested_at)
        PARTITION BY toYYYYMM(ts)
        ORDER BY (deployment, sample_id)
        """,
        f"""
        CREATE TABLE IF NOT EXISTS gpu_deployments (
            name String,
            gpu_type String,
            gpu_count UInt32,
            usd_per_gpu_hour {MONEY},
            pricing LowCardinality(String),
            idle_below_tokens_per_s Float64,
            loaded_at DateTime64(3, 'UTC')
        )
        ENGINE = ReplacingMergeTree(loaded_at)
        ORDER BY name
        """,
        _GPU_MINUTELY,
        _GPU_UNIT_COSTS,
        _GPU_DAILY,
        _GPU_ALLOCATED,
    )),
    Migration(5, "cookbook views: retry waste, weekly movers, dead letters by reason", (
        _RETRY_WASTE, _MOVERS, _DEAD_LETTERS,
    )),
    Migration(6, "emitter ledger for reconciliation", (
        # Cumulative counts per emitter: the latest report of each emitter, source and minute wins.
        """
        CREATE TABLE IF NOT EXISTS emitter_ledger (
            emitter_id String,
            service LowCardinality(String),
            minute DateTime64(3, 'UTC'),
            events UInt64,
            exact Bool,
            reported_at DateTime64(3, 'UTC')
        )
        ENGINE = ReplacingMergeTree(reported_at)
        ORDER BY (service, minute, emitter_id)
        """,
    )),
    Migration(7, "alert deliveries: what each destination has acknowledged (the alerts table is the outbox)", (
        """
        CREATE TABLE IF NOT EXISTS alert_deliveries (
            destination LowCardinality(String),
            dedup_key String,
            state LowCardinality(String),
            outcome LowCardinality(String) COMMENT 'delivered, or failed for a refusal that retrying cannot fix',
            detail String,
            delivered_at DateTime64(3, 'UTC')
        )
        ENGINE = ReplacingMergeTree(delivered_at)
        ORDER BY (destination, dedup_key, state)
        """,
    )),
    Migration(8, "trust: dead letters keyed by their bytes, conflicting copies recorded, first copy stands", (
        # Kafka coordinates start again when a broker restarts or a topic is recreated: the
        # digest of the raw bytes keeps a different record from taking another's place.
        "ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS raw_digest UInt64 COMMENT "
        "'first 8 bytes of BLAKE2b of raw', "
        "MODIFY ORDER BY (source_topic, source_partition, source_offset, item_index, raw_digest)",
        f"""
        CREATE TABLE IF NOT EXISTS event_conflicts (
            detected_at DateTime64(3, 'UTC'),
            event_id String,
            ts DateTime64(3, 'UTC') COMMENT 'of the conflicting copy',
            stored_ts DateTime64(3, 'UTC') COMMENT 'of the copy that stands',
            differs Array(String) COMMENT 'fields whose values differ',
            source_topic LowCardinality(String),
            source_partition UInt32,
            source_offset UInt64,
            stored_source_topic LowCardinality(String),
            stored_source_partition UInt32,
            stored_source_offset UInt64,
            copy_total_cost Nullable({MONEY}),
            stored_total_cost Nullable({MONEY}),
            copy String COMMENT 'the conflicting copy as JSON; it was not applied',
            copy_digest UInt64
        )
        ENGINE = ReplacingMergeTree(detected_at)
        ORDER BY (event_id, copy_digest)
        """,
        """
        CREATE TABLE IF NOT EXISTS dead_letter_replays (
            replayed_at DateTime64(3, 'UTC'),
            source_topic LowCardinality(String),
            source_partition UInt32,
            source_offset UInt64,
            item_index Int32,
            raw_digest UInt64,
            topic LowCardinality(String) COMMENT 'where the raw bytes were submitted again',
            expected String COMMENT 'what processing them with the worker code of the replay said'
        )
        ENGINE = ReplacingMergeTree(replayed_at)
        ORDER BY (source_topic, source_partition, source_offset, item_index, raw_digest)
        """,
        # The ids of a batch, for the conflict check to join against (sinks/conflicts.py). Not
        # replicated on a cluster (`ENGINE=MergeTree`, written so that on_cluster leaves it): a
        # writer probes the replica it inserts through. Whole parts expire after half an hour.
        """
        CREATE TABLE IF NOT EXISTS event_id_probes (
            probe_id UInt64,
            event_id String,
            probed_at DateTime DEFAULT now()
        )
        ENGINE=MergeTree
        PARTITION BY toStartOfFifteenMinutes(probed_at)
        ORDER BY probe_id
        TTL probed_at + INTERVAL 30 MINUTE
        SETTINGS ttl_only_drop_parts = 1
        """,
        # Of several copies of one event, the first stored stands: the engine keeps the row with
        # the highest version, and `precedence` falls as ingested_at rises.
        "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS precedence UInt64 "
        "MATERIALIZED toUInt64(4102444800000) - toUnixTimestamp64Milli(ingested_at) "
        "COMMENT 'first stored copy wins: highest for the earliest ingested_at'",
        # Laid out for time: a time range reads only that range; (ts, event_id) still collapses
        # re-deliveries, which carry the same ts.
        partial(relayout, table="usage_events", version_column="ingested_at", engine=(
            "ENGINE = ReplacingMergeTree(precedence) PARTITION BY toYYYYMM(ts) ORDER BY (ts, event_id)")),
    )),
    Migration(9, "alert deliveries: a schedule per destination and alert, redacted errors", (
        "ALTER TABLE alert_deliveries ADD COLUMN IF NOT EXISTS attempts UInt32 DEFAULT 0 COMMENT "
        "'requests made for this delivery so far (0: recorded before attempts were counted)' AFTER outcome",
        "ALTER TABLE alert_deliveries ADD COLUMN IF NOT EXISTS first_attempt_at Nullable(DateTime64(3, 'UTC')) "
        "AFTER attempts",
        "ALTER TABLE alert_deliveries ADD COLUMN IF NOT EXISTS next_attempt_at Nullable(DateTime64(3, 'UTC')) "
        "COMMENT 'when a pending delivery is due again; NULL once delivered or failed' AFTER first_attempt_at",
        "ALTER TABLE alert_deliveries COMMENT COLUMN outcome "
        "'pending (retried on its own schedule), delivered, or failed (refused, or given up)'",
        "ALTER TABLE alert_deliveries COMMENT COLUMN detail "
        "'the last error, redacted: no URL path or query, routing key, token or Authorization value'",
        "ALTER TABLE alert_deliveries COMMENT COLUMN delivered_at "
        "'when this row was written (its version under FINAL); the delivery time once delivered'",
        # Refusals recorded before this migration kept up to 200 characters of the receiver's
        # body, which can echo the URL's token or the routing key: keep only the status.
        # Idempotent: the new text has no ': ', and rows written from now on have attempts > 0.
        "ALTER TABLE alert_deliveries UPDATE detail = concat(splitByString(': ', detail)[1], "
        "' (response body removed on upgrade: it may have echoed a secret)') "
        "WHERE outcome = 'failed' AND attempts = 0 AND detail LIKE 'HTTP %: %' SETTINGS mutations_sync = 2",
    )),
    Migration(10, "windows as data: minute and hour rollups, kept exact by recomputation", (
        rollups.MARKS_DDL, rollups.MARKS_MV_DDL, rollups.STATE_DDL, rollups.DONE_DDL,
        rollups.table_ddl(rollups.V10_MINUTES), rollups.table_ddl(rollups.V10_HOURS),
        rollups.watermarks_view((rollups.V10_MINUTES, rollups.V10_HOURS)),
        # a GpuSample field this version does not know is kept, as usage events' are
        "ALTER TABLE gpu_samples ADD COLUMN IF NOT EXISTS extra String DEFAULT '' "
        "COMMENT 'fields unknown to the schema version, as JSON'",
        # the same views, the same answers, from the rollups
        rollups.cost_view("cost_hourly", "{t}", rollups.V10_HOURS),
        rollups.cost_view("cost_daily", "toDate({t})", rollups.V10_HOURS),
        rollups.cost_view("cost_monthly", "toStartOfMonth({t})", rollups.V10_HOURS), _UNIT_COSTS,
        rollups.retry_waste_view(rollups.V10_MINUTES),
        # what is already stored gets rolled up too, oldest first (an INSERT: once, not on every replica)
        lambda store, run: store.command(rollups.backfill_marks()),
    )),
    Migration(11, "readers on the rollups: exact range views, weekly movers from usage_hours", (
        reader_views.range_view("usage_minutely", rollups.V10_MINUTES),
        reader_views.range_view("usage_hourly", rollups.V10_HOURS),
        reader_views.movers(rollups.V10_HOURS),
    )),
    Migration(12, "rollup grains per question: compact hours without customers, customer_hours beside them", (
        regrain,  # the new grains, from the rows the old ones hold (sinks/regrain.py)
        rollups.WATERMARKS_VIEW,
        rollups.cost_view("cost_hourly", "{t}"), rollups.cost_view("cost_daily", "toDate({t})"),
        rollups.cost_view("cost_monthly", "toStartOfMonth({t})"), rollups.retry_waste_view(rollups.HOURS),
        reader_views.range_view("usage_minutely", rollups.MINUTES),
        reader_views.range_view("usage_hourly", rollups.HOURS),
        reader_views.range_view("customer_hourly", rollups.CUSTOMER_HOURS),
        reader_views.movers(rollups.CUSTOMER_HOURS),
    )),
    Migration(13, "GPU exporter II: KV max, cached prompt tokens, effective-dated GPU prices, cost bases",
              gpu_views.STATEMENTS),
    Migration(14, "money II: provider cost and billing policy, invoice lines, resale price book and margins", (
        *billing.MONEY_II,
    )),
    Migration(15, "UsageEvent v2: tool calls, region and inference profile; non-token fees priced", (
        # rows stored before this migration came from version 1 events
        "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS schema_version UInt16 DEFAULT 1 AFTER event_id",
        *(f"ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS {name} UInt32 DEFAULT 0 AFTER reasoning_tokens"
          for name in reversed(CALL_COLUMNS)),
        "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS region LowCardinality(Nullable(String)) "
        "AFTER service_tier",
        "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS inference_profile LowCardinality(Nullable(String)) "
        "AFTER region",
        # Tool and request fees: their own cost line, part of total_cost (and list_cost), with the
        # fee per call of each kind that applied and the catalog's list fee. Rows priced before
        # this migration had no fee line: 0 where priced, NULL where not.
        f"ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS fee_cost Nullable({MONEY}) "
        "DEFAULT if(priced, 0, NULL) AFTER output_cost",
        *(f"ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS {kind}_price_per_call Nullable({MONEY}) "
          "AFTER reasoning_price_per_mtok" for kind in reversed(FEE_KINDS)),
        *(f"ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS list_{kind}_price_per_call Nullable({MONEY}) "
          "AFTER list_cost" for kind in reversed(FEE_KINDS)),
    )),
    Migration(16, "detectors that know their noise: hourly baselines, 10-minute peaks, one incident per subject", (
        # Refreshed once an hour from usage_hours (detect/baseline.py); a pass reads one hour's rows. Rows
        # expire by when they were written (a replay or a test of another time must not lose them at once).
        """
        CREATE TABLE IF NOT EXISTS detector_baselines (
            for_hour DateTime('UTC') COMMENT 'the hour these expectations are for',
            subject String COMMENT 'team=…, feature=… or customer=… ('': refreshed, no subject yet)',
            requests Float64 COMMENT 'expected requests in this hour of the week',
            cost Float64 COMMENT 'expected USD in this hour of the week',
            peak_cost Float64 COMMENT 'typical largest 10-minute USD at this hour (schedules, bursts)',
            dispersion Float64 COMMENT 'phi in var = mu + phi mu^2 of hourly requests',
            fail_ratio Float64 COMMENT 'failed attempts per attempt over the history',
            history_hours UInt32,
            slow_hot UInt8 COMMENT 'the last 24 closed hours are a sustained shift',
            slow_calm UInt8,
            slow_excess_usd Float64,
            day_cost Float64 COMMENT 'USD over the last 24 closed hours',
            written_at DateTime('UTC') DEFAULT now()
        )
        ENGINE = ReplacingMergeTree
        ORDER BY (for_hour, subject)
        TTL written_at + INTERVAL 2 DAY
        """,
        """
        CREATE TABLE IF NOT EXISTS detector_peaks (
            subject String,
            hour DateTime('UTC'),
            peak_cost Float64 COMMENT 'largest USD in 10 minutes ending in this hour',
            written_at DateTime('UTC') DEFAULT now()
        )
        ENGINE = ReplacingMergeTree
        ORDER BY (hour, subject)
        TTL written_at + INTERVAL 35 DAY
        """,
        # One row per change; the newest row of a (kind, subject) is its state; closed = no incident open.
        """
        CREATE TABLE IF NOT EXISTS detector_incidents (
            kind LowCardinality(String),
            subject String,
            state LowCardinality(String) COMMENT 'pending, firing',
            closed UInt8,
            opened_at DateTime64(3, 'UTC'),
            severity LowCardinality(String),
            hot_passes UInt32,
            calm_passes UInt32,
            peak Float64,
            wasted_usd Float64,
            updated_at DateTime64(3, 'UTC')
        )
        ENGINE = ReplacingMergeTree(updated_at)
        ORDER BY (kind, subject)
        """,
        # Messages delivered per destination: its hourly budget (alerting/digest.py).
        """
        CREATE TABLE IF NOT EXISTS alert_messages (
            destination LowCardinality(String),
            alerts UInt32 COMMENT 'alerts in the message (more than one kind: a digest)',
            sent_at DateTime64(3, 'UTC'),
            id UUID DEFAULT generateUUIDv4() COMMENT 'two messages of one instant are two rows'
        )
        ENGINE = ReplacingMergeTree
        ORDER BY (destination, sent_at, id)
        TTL toDateTime(sent_at) + INTERVAL 7 DAY
        """,
    )),
    Migration(17, "readers off raw: the advisor's traffic shapes and customer days as rollups", (
        *(rollups.table_ddl(rollup) for rollup in shapes.V17_SHAPES),
        shapes.V17_WATERMARKS_VIEW,
        shapes.backfill,  # from the raw events already stored (sinks/shapes.py)
        reader_views.layered_view("customer_daily", shapes.CUSTOMER_DAYS),
    )),
    Migration(18, "an hourly message budget that holds on any clock: alert_messages expire by when they were written", (
        # sent_at is the alert cycle's clock, which a simulation or a replay of an old day sets weeks back: a
        # TTL on it dropped every such row as it was inserted, so the budget always looked unspent.
        "ALTER TABLE alert_messages ADD COLUMN IF NOT EXISTS written_at DateTime('UTC') DEFAULT now() "
        "COMMENT 'when the row was written (its expiry); sent_at is on the cycle''s clock'",
        "ALTER TABLE alert_messages MODIFY TTL written_at + INTERVAL 7 DAY",
    )),
    Migration(19, "retry storms off raw: failures per 5 minutes x feature x provider, repeated shapes per 10 min", (
        rollups.table_ddl(shapes.FEATURE_FAILURES),
        rollups.table_ddl(shapes.LOOP_SHAPES),
        shapes.V19_WATERMARKS_VIEW,
        shapes.backfill_storm_windows,  # from the raw events already stored (sinks/shapes.py)
    )),
    Migration(20, "the advisor and report at 50M: prefix repeats, minute bursts and report questions per hour", (
        *(rollups.table_ddl(rollup) for rollup in shapes.ADVISOR_HOURS),
        shapes.WATERMARKS_VIEW,
        shapes.backfill_advisor_hours,  # from the raw events already stored (sinks/shapes.py)
    )),
    Migration(21, "GPU allocation off raw: self-hosted usage per minute and consumer as a rollup, a ranged view", (
        rollups.table_ddl(rollups.DEPLOYMENT_MINUTES),
        rollups.watermarks_view((*rollups.ROLLUPS, *shapes.SHAPES, rollups.DEPLOYMENT_MINUTES)),
        rollups.backfill_grains((rollups.DEPLOYMENT_MINUTES,)),  # from the raw events already stored
        *gpu_views.ALLOCATION_STATEMENTS,
    )),
    Migration(22, "questions off raw and off request sets: requests counted per day, overrides and unpriced hours", (
        *(rollups.table_ddl(rollup) for rollup in rollups.LATER_GRAINS),
        rollups.watermarks_view((*rollups.ROLLUPS, *shapes.SHAPES, *rollups.READER_GRAINS)),
        rollups.backfill_grains(rollups.LATER_GRAINS),  # from the raw events already stored
        reader_views.counted_days_view("team_daily", rollups.TEAM_DAYS),
        reader_views.counted_days_view("feature_daily", rollups.FEATURE_DAYS),
        reader_views.range_view("override_hourly", rollups.OVERRIDE_HOURS),
        reader_views.range_view("unpriced_hourly", rollups.UNPRICED_HOURS),
    )),
    Migration(23, "GPU samples laid out for time: a day of GPU panels reads that day's samples", (
        # Sorted by (deployment, sample_id), a time filter could not reach the sort key, so a day's panel read
        # every sample of its months. (deployment, ts, sample_id) still collapses re-deliveries, which carry the
        # sample's ts; the copy keeps every row (sinks/relayout.py).
        partial(relayout, table="gpu_samples", version_column="ingested_at", engine=(
            "ENGINE = ReplacingMergeTree(ingested_at) PARTITION BY toYYYYMM(ts) "
            "ORDER BY (deployment, ts, sample_id)")),
    )),
    Migration(24, "live minutes from 10-second slices: marks name their slice, slices kept for an hour", (
        live_slices.SLICES_DDL,
        live_slices.MARKS_SLICE,
        *live_slices.MARKS_MV,
        # the slices' search starts now, as a maintainer's pass leaves it: not at every mark ever made
        lambda store, run: store.command(
            f"INSERT INTO rollup_state (rollup, through) VALUES ('{live_slices.LIVE_SLICES.name}', "
            f"now64(3, 'UTC') - INTERVAL {int(rollups._IN_FLIGHT.total_seconds())} SECOND)"),
    )),
    Migration(25, "day views that compute each rollup's watermark once (customer_daily took ~0.4 s for it)", (
        reader_views.layered_view("customer_daily", shapes.CUSTOMER_DAYS),
        reader_views.counted_days_view("team_daily", rollups.TEAM_DAYS),
        reader_views.counted_days_view("feature_daily", rollups.FEATURE_DAYS),
    )),
    Migration(26, "one incident, one page: a subject one cause lifts with others is stored as part of its incident", (
        "ALTER TABLE detector_incidents ADD COLUMN IF NOT EXISTS root String DEFAULT '' COMMENT "
        "'dedup key of the incident this one is part of (not delivered on its own); empty: its own' AFTER wasted_usd",
        "ALTER TABLE alerts ADD COLUMN IF NOT EXISTS correlated_with String DEFAULT '' COMMENT "
        "'dedup key of the incident this alert is part of: stored, not delivered on its own' AFTER message",
    )),
    Migration(27, "the baseline refresh reads each closed hour's subject-hours, computed once, not four weeks merged", (
        # detect/subject_hours.py: an hour is stored with the latest rollup mark of its minutes when it was
        # computed (row subject ''); a later mark recomputes it. Filled by the first refresh after this.
        """
        CREATE TABLE IF NOT EXISTS detector_subject_hours (
            hour DateTime('UTC'),
            subject String COMMENT 'team=…, feature=…, customer=… or feature=…,customer=… (empty: the hour is done)',
            requests UInt64,
            attempts UInt64,
            failed_attempts UInt64,
            cost_usd Decimal(38, 18),
            mark DateTime64(3, 'UTC') COMMENT 'the latest rollup mark of the hour when computed',
            written_at DateTime('UTC') DEFAULT now()
        )
        ENGINE = ReplacingMergeTree(mark)
        PARTITION BY toYYYYMM(hour)
        ORDER BY (hour, subject)
        TTL written_at + INTERVAL 120 DAY
        """,
    )),
    Migration(28, "a customer's hours sorted by customer: a customer budget's today and the storm pass's customers", (
        rollups.table_ddl(rollups.CUSTOMER_PROVIDER_HOURS),
        rollups.watermarks_view((*rollups.ROLLUPS, *shapes.SHAPES, *rollups.READER_GRAINS, *rollups.DETECTOR_GRAINS)),
        rollups.backfill_grains(rollups.DETECTOR_GRAINS),  # from the raw events already stored
    )),
    Migration(29, "a pair's subject-hour names its only model, whose leaf it is: a third fewer stored subject-hours", (
        # detect/subject_hours.py: a feature × customer's hour served by one model is that model's hour; the row
        # says which, and no leaf row is stored for it. Hours stored before keep every leaf row ('' here): a
        # read takes either.
        "ALTER TABLE detector_subject_hours ADD COLUMN IF NOT EXISTS model String DEFAULT '' COMMENT "
        "'a feature × customer hour served by one model: that model (its leaf has no row of its own); else empty' "
        "AFTER subject",
    )),
    Migration(30, "a page on a new price says what changed: per request, from what to what, since when", (
        # detect/baseline.py (SpendAnomalyRule.price_shift); rows written before read 0 hours: the page says the
        # day's rise instead
        "ALTER TABLE detector_baselines ADD COLUMN IF NOT EXISTS price_hours UInt16 DEFAULT 0 COMMENT "
        "'the last closed hours in a row at a new price per request (0: none)' AFTER day_cost",
        "ALTER TABLE detector_baselines ADD COLUMN IF NOT EXISTS usual_per_request Float64 DEFAULT 0 COMMENT "
        "'USD per request over those hours, as usual' AFTER price_hours",
        "ALTER TABLE detector_baselines ADD COLUMN IF NOT EXISTS per_request Float64 DEFAULT 0 COMMENT "
        "'USD per request over those hours, as observed' AFTER usual_per_request",
        "ALTER TABLE detector_baselines ADD COLUMN IF NOT EXISTS price_excess_usd Float64 DEFAULT 0 COMMENT "
        "'USD above what those hours requests usually cost' AFTER per_request",
    )),
    Migration(31, "the dashboard's cost per request by feature off request sets: requests counted per hour × feature", (
        rollups.table_ddl(rollups.FEATURE_REQUEST_HOURS),
        rollups.watermarks_view((*rollups.ROLLUPS, *shapes.SHAPES, *rollups.READER_GRAINS, *rollups.DETECTOR_GRAINS,
                                 *rollups.PANEL_GRAINS)),
        rollups.backfill_grains(rollups.PANEL_GRAINS),  # from the raw events already stored
        reader_views.range_view("feature_requests_hourly", rollups.FEATURE_REQUEST_HOURS),
    )),
    Migration(32, "a new price's incident resolves when the current window's requests are back at the usual price", (
        # detect/anomaly.py (SpendAnomalyRule.price_back): where the current window says a new price is over, the
        # slow window is judged by its median alone; rows written before read the whole verdict (nothing released)
        "ALTER TABLE detector_baselines ADD COLUMN IF NOT EXISTS median_hot UInt8 DEFAULT slow_hot COMMENT "
        "'the slow window hot by its median hour ratio alone, without the price test' AFTER price_excess_usd",
        "ALTER TABLE detector_baselines ADD COLUMN IF NOT EXISTS median_calm UInt8 DEFAULT slow_calm COMMENT "
        "'the slow window calm by its median hour ratio alone, without the price test' AFTER median_hot",
    )),
    Migration(33, "GPU cost allocated per hour × deployment × team as a rollup, GPU samples and prices marked", (
        # sinks/gpu_views.py: a week of allocation split every minute's cost over a week of deployment_minutes rows
        # at read time (~1 s CPU at 50M events); the hours are kept by the maintainer like every grain
        *gpu_views.HOUR_STATEMENTS,
        rollups.watermarks_view(tuple(g for g in rollups.all_grains() if g not in key_lists.LIST_GRAINS)),
        rollups.backfill_grains(gpu_views.GPU_GRAINS),  # from the samples and usage already stored
    )),
    Migration(34, "Top spenders from kept day lists: day × key sorted by key, each day's 1,000 costliest keys", (
        # sinks/key_lists.py: a week's ranking grouped every key of the week (~3 s CPU at 50M events); the lists
        # bound every key's cost, so only the few that can rank are read, key first
        *key_lists.STATEMENTS,
        rollups.watermarks_view(rollups.all_grains()),
        rollups.backfill_grains(key_lists.LIST_GRAINS),  # key_days first: the lists are computed from it
    )),
    Migration(35, "Top spenders from the day lists in the cookbook: the lists' watermarks and open rows as views", (
        # sinks/key_lists.py: the parameterized top_spenders view cost ~0.5-1 s whatever the range (its scalars
        # analysed again in every scope that named them, and twice as a parameterized view); the cookbook's query
        # names two plain views instead
        *key_lists.READER_STATEMENTS,
    )),
    Migration(36, "the range views' fixed cost: raw read in one arm, customer_daily's partial days from the hours", (
        # every arm of a view costs its plan whatever it reads (~5-10 ms on 2 cores, BENCHMARKS.md s21); and a range
        # not starting at midnight read its first partial day of customer_daily from raw (~1 s CPU at 50M events)
        *(reader_views.range_view(name, rollup, raw_once=True) for name, rollup in (
            ("usage_minutely", rollups.MINUTES), ("usage_hourly", rollups.HOURS),
            ("customer_hourly", rollups.CUSTOMER_HOURS), ("override_hourly", rollups.OVERRIDE_HOURS),
            ("unpriced_hourly", rollups.UNPRICED_HOURS), ("feature_requests_hourly", rollups.FEATURE_REQUEST_HOURS))),
        reader_views.whole_days_view("customer_daily", shapes.CUSTOMER_DAYS),
        reader_views.counted_days_view("team_daily", rollups.TEAM_DAYS, raw_once=True),
        reader_views.counted_days_view("feature_daily", rollups.FEATURE_DAYS, raw_once=True),
    )),
)


def migrate(store: Store, *, cluster: str | None = None) -> list[int]:
    """Apply every migration not yet recorded. Returns the versions applied now.

    With ``cluster`` (``SPENDSTREAM_CLICKHOUSE_CLUSTER``) every statement runs
    ``ON CLUSTER`` and tables use the Replicated engines (replica paths from the
    server's ``default_replica_path``/``default_replica_name``): one shard, many
    replicas. See README, "Scaling out".
    """
    def run(sql: str) -> None:
        store.command(on_cluster(sql, cluster) if cluster else sql)

    run("CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version")
    done = {row[0] for row in store.query("SELECT version FROM schema_migrations FINAL").rows}
    applied = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        for statement in migration.statements:
            if callable(statement):
                statement(store, run)
            else:
                run(statement)
        store.query_text(
            "INSERT INTO schema_migrations (version, name) VALUES ({v:UInt32}, {n:String})",
            {"v": migration.version, "n": migration.name},
            fmt="CSV",
        )
        log.info("applied schema migration %d: %s", migration.version, migration.name)
        applied.append(migration.version)
    return applied


_DDL_HEAD = re.compile(r"^\s*(CREATE TABLE IF NOT EXISTS \w+|CREATE OR REPLACE VIEW \w+|ALTER TABLE \w+"
                       r"|CREATE MATERIALIZED VIEW IF NOT EXISTS \w+"
                       r"|DROP (?:TABLE|VIEW) IF EXISTS \w+|EXCHANGE TABLES \w+ AND \w+)", re.I)


def on_cluster(sql: str, cluster: str) -> str:
    """``sql`` for every replica of ``cluster``: ``ON CLUSTER`` after the object, Replicated engines."""
    if not re.fullmatch(r"[\w.-]+", cluster):
        raise ValueError(f"cluster name {cluster!r} has characters a ClickHouse cluster name cannot")
    sql, found = _DDL_HEAD.subn(lambda m: f"{m.group(1)} ON CLUSTER '{cluster}'", sql, count=1)
    if not found:
        raise ValueError(f"cannot put ON CLUSTER into: {sql.strip()[:60]}")
    return re.sub(r"ENGINE = (Replacing|Summing|Aggregating)?MergeTree", r"ENGINE = Replicated\1MergeTree", sql)
