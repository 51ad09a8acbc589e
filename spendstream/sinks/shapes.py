"""The readers' own rollups: what the advisor read raw events for, and customers by the day.

``rollups`` keeps counts, tokens and money per period and attribution key. The advisor
also asks about the *shape* of the traffic — how long calls are, whether a feature
repeats a prompt prefix within the provider's cache lifetime, which tags it carries —
and read four weeks of raw events for it (BENCHMARKS.md, issue 17). These rollups keep
exactly what those questions need, maintained by the same mechanism (marks, recomputed
from ``usage_events FINAL``, the open and pending periods read from raw: see
:mod:`spendstream.sinks.rollups`), so every answer stays equal to the same question
asked of raw:

- ``advice_hours``: per hour × feature × the price's provider and model, priced events
  only: calls, cost, the successful calls' tokens by type, token-size *histograms*
  (fixed log-spaced buckets, :func:`token_bucket`), uncapped calls and what their
  output above each bucket costs, and the realtime calls' cost with their
  ``latency_sensitive``/``user_facing`` tags counted. Quantiles are read from the
  buckets (stated as such: "p95 ≤ 1,448 tokens"), and the output cap the advisor
  proposes is a bucket's upper edge, so what it saves is exact.
- ``prefix_windows``: per five minutes × feature × provider × model × prefix fingerprint
  (and its length): calls, the first and last call's time, and the sums the caching
  estimate needs, with the first call's share apart. Five minutes is no longer than
  any provider's cache lifetime (:data:`CACHE_RULES`), so every call but the first
  of a window repeats its prefix within the lifetime, and whether the first does is
  told by the gap to the previous window's last call: the estimate is the same as
  walking the raw calls one by one.
- ``customer_days``: per day × customer, attempts, tokens and money: chargeback for a
  month reads ~30 rows a customer, not ~720 hours × team × feature × model.
- ``feature_failures``: per five minutes × feature × provider, attempts, failed attempts,
  the longest request and what billed failed attempts cost: the retry-storm pass's slow
  window (two hours). Its rows per window are bounded by features × providers, not by
  the traffic: ``usage_minutes`` keeps team, environment, model and service too, and held
  1.4 events a row at 5M events over four weeks, so two hours of it grew with density almost
  as raw does (BENCHMARKS.md, issue 17).
- ``loop_shapes``: per ten minutes, the request shapes (feature, customer, model, prompt-prefix
  fingerprint, input size; first attempts with a fingerprint) that *repeated* in those
  minutes — two distinct requests or more — and how many: an agent loop too slow for
  the retry-storm pass's 10-minute test (one identical call a minute for hours) adds
  up over its slow window. Kept only where a shape repeats (``Rollup.having``): one row
  per request would be raw's size.
- ``prefix_hours``, ``burst_hours``, ``report_hours`` (migration 20, at the end of this
  file): what the advisor's caching estimate and burst test and the report's tables read,
  per hour, in rows bounded by keys × hours rather than by the events (prefix_windows,
  usage_minutes and usage_hours grow with the traffic's density).

Grains were chosen by counting rows (bench/rollup_grains.py): see BENCHMARKS.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import timedelta

from spendstream.sinks.rollups import MEASURES, MONEY, ROLLUPS, Measure, Rollup, recompute_sql, watermarks_view
from spendstream.sinks.store import Store

log = logging.getLogger(__name__)

# Quarter-octave buckets: bucket k holds the token counts n with 2^((k-1)/4) < n <= 2^(k/4) (bucket 0: n <= 1),
# about 19 % wide, 100 buckets up to 2^25 tokens.
BUCKETS_PER_OCTAVE = 4


def token_bucket(column: str) -> str:
    """SQL: the bucket of a token count."""
    return f"toUInt8(if({column} <= 1, 0, ceil(log2({column}) * {BUCKETS_PER_OCTAVE})))"


def bucket_edge(bucket: int) -> int:
    """The largest token count in ``bucket``: a count is in a bucket above it exactly when it is larger."""
    return math.floor(2 ** (bucket / BUCKETS_PER_OCTAVE) + 1e-9)


def quantile_edge(histogram: dict[int, int], level: float) -> int:
    """The upper edge of the bucket holding the ``level`` quantile (nearest rank) of a histogram; 0 when empty."""
    total = sum(histogram.values())
    if not total:
        return 0
    rank = max(1, math.ceil(level * total))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return bucket_edge(bucket)
    raise AssertionError("unreachable: the ranks add up to the total")


def _hist(column: str, condition: str = "1") -> str:
    return f"sumMapIf(map({token_bucket(column)}, toUInt64(1)), {condition})"


_OK, _REALTIME = "status = 'ok'", "mode = 'realtime'"
_UNCAPPED_PRICED = "max_tokens IS NULL AND output_price_per_mtok IS NOT NULL"
_COUNTS, _VALUES = "Map(UInt8, UInt64)", "Map(UInt8, Decimal(38, 18))"

ADVICE_MEASURES: tuple[Measure, ...] = (
    Measure("calls", "UInt64", "count()", "sum(calls)"),
    Measure("cost_usd", MONEY, "sum(total_cost)", "sum(cost_usd)"),
    Measure("ok_calls", "UInt64", f"countIf({_OK})", "sum(ok_calls)"),
    Measure("ok_cost_usd", MONEY, f"sumIf(total_cost, {_OK})", "sum(ok_cost_usd)"),
    Measure("ok_uncached_tokens", "Int64", f"sumIf(input_tokens - cached_input_tokens - cache_write_tokens, {_OK})",
            "sum(ok_uncached_tokens)"),
    Measure("ok_cached_tokens", "UInt64", f"sumIf(cached_input_tokens, {_OK})", "sum(ok_cached_tokens)"),
    Measure("ok_cache_write_tokens", "UInt64", f"sumIf(cache_write_tokens, {_OK})", "sum(ok_cache_write_tokens)"),
    Measure("ok_output_tokens", "UInt64", f"sumIf(output_tokens, {_OK})", "sum(ok_output_tokens)"),
    Measure("ok_input_hist", _COUNTS, _hist("input_tokens", _OK), "sumMap(ok_input_hist)"),
    Measure("ok_output_hist", _COUNTS, _hist("output_tokens", _OK), "sumMap(ok_output_hist)"),
    Measure("output_hist", _COUNTS, _hist("output_tokens"), "sumMap(output_hist)"),
    Measure("uncapped_calls", "UInt64", "countIf(max_tokens IS NULL)", "sum(uncapped_calls)"),
    # per output bucket, the uncapped priced calls' output tokens × output price, and their output prices:
    # a cap at a bucket's edge saves (sum of the first − edge × sum of the second) over the buckets above it
    Measure("uncapped_output_value", _VALUES,
            f"sumMapIf(map({token_bucket('output_tokens')}, toDecimal128(output_tokens, 0) * "
            f"assumeNotNull(output_price_per_mtok)), {_UNCAPPED_PRICED})", "sumMap(uncapped_output_value)"),
    Measure("uncapped_output_price", _VALUES,
            f"sumMapIf(map({token_bucket('output_tokens')}, assumeNotNull(output_price_per_mtok)), "
            f"{_UNCAPPED_PRICED})", "sumMap(uncapped_output_price)"),
    Measure("realtime_calls", "UInt64", f"countIf({_REALTIME})", "sum(realtime_calls)"),
    Measure("realtime_cost_usd", MONEY, f"sumIf(total_cost, {_REALTIME})", "sum(realtime_cost_usd)"),
    Measure("realtime_declared", "UInt64", f"countIf({_REALTIME} AND tags['latency_sensitive'] = 'false')",
            "sum(realtime_declared)"),
    Measure("realtime_user_facing", "UInt64", f"countIf({_REALTIME} AND tags['user_facing'] = 'true')",
            "sum(realtime_user_facing)"),
)

# What caching the prefix of one call saves: its uncached prefix tokens at (input − cached input price).
PREFIX_SAVING = ("ifNull(toDecimal128(greatest(toInt64(prefix_tokens) - toInt64(cached_input_tokens), 0), 0) "
                 "* (input_price_per_mtok - cached_input_price_per_mtok) / 1000000, 0)")
PREFIX_CACHED = "assumeNotNull(least(cached_input_tokens, prefix_tokens))"
_FIRST = "(ts, event_id)"

PREFIX_MEASURES: tuple[Measure, ...] = (
    Measure("calls", "UInt64", "count()", "sum(calls)"),
    Measure("first_ts", "DateTime64(3, 'UTC')", "min(ts)", "min(first_ts)"),
    Measure("last_ts", "DateTime64(3, 'UTC')", "max(ts)", "max(last_ts)"),
    Measure("cached_tokens", "UInt64", f"sum({PREFIX_CACHED})", "sum(cached_tokens)"),
    Measure("saving_usd", "Decimal(38, 18)", f"sum({PREFIX_SAVING})", "sum(saving_usd)"),
    Measure("first_cached_tokens", "UInt64", f"argMin({PREFIX_CACHED}, {_FIRST})",
            "argMin(first_cached_tokens, first_ts)"),
    Measure("first_saving_usd", "Decimal(38, 18)", f"argMin({PREFIX_SAVING}, {_FIRST})",
            "argMin(first_saving_usd, first_ts)"),
)

PRICE_KEYS = ("feature", "price_provider_id", "price_model_id")
ADVICE_HOURS = Rollup("advice_hours", "hour", "toStartOfHour(ts)", timedelta(hours=1), PRICE_KEYS,
                      measures=ADVICE_MEASURES, where="priced AND feature IS NOT NULL")
PREFIX_WINDOWS = Rollup(
    "prefix_windows", "window_start", "toStartOfFiveMinutes(ts)", timedelta(minutes=5),
    (*PRICE_KEYS, "prefix_fingerprint", "prefix_tokens"), measures=PREFIX_MEASURES,
    where="priced AND prefix_fingerprint IS NOT NULL AND prefix_tokens IS NOT NULL "
          "AND input_price_per_mtok IS NOT NULL",
    key_types=(("prefix_fingerprint", "Nullable(String)"), ("prefix_tokens", "Nullable(UInt64)")))
# Chargeback per customer for days and months: day × customer holds ~11 events a row where hour × customer
# × team × feature … (customer_hours) holds ~1.5 (BENCHMARKS.md, "Which grains"). No request sets (their
# states are as large as the requests): attempts, tokens and money. A day is recomputed at most every ten
# minutes (a day of raw events per late event would be a lot); readers take a pending day from
# customer_hours meanwhile (reader_views.layered_view), so answers stay exact.
CUSTOMER_DAYS = Rollup("customer_days", "day", "toStartOfDay(ts)", timedelta(days=1), ("customer",),
                       measures=tuple(m for m in MEASURES if m.name in (
                           "attempts", "input_tokens", "output_tokens", "cost_usd", "list_cost_usd",
                           "unpriced_attempts")),
                       min_recompute_s=600.0)
# The retry-storm pass's slow window, per feature and provider (five minutes: the partial periods at the
# window's edges are read from raw, about as much as the pass's fast window reads anyway).
FEATURE_FAILURES = Rollup("feature_failures", "window_start", "toStartOfFiveMinutes(ts)", timedelta(minutes=5),
                          ("feature", "provider"),
                          measures=tuple(m for m in MEASURES if m.name in (
                              "attempts", "failed_attempts", "max_attempt", "failed_cost_usd")),
                          where="feature IS NOT NULL AND feature != ''")
# Distinct requests (a request re-sent as a first attempt under a new event id counts once a period).
LOOP_SHAPES = Rollup("loop_shapes", "window_start", "toStartOfTenMinutes(ts)", timedelta(minutes=10),
                     ("feature", "customer", "model", "prefix_fingerprint", "input_tokens"),
                     measures=(Measure("requests", "UInt64", "uniqExact(ifNull(request_id, event_id))",
                                       "sum(requests)"),
                               Measure("cost_usd", MONEY, "sum(total_cost)", "sum(cost_usd)")),
                     where="attempt = 1 AND prefix_fingerprint IS NOT NULL AND prefix_fingerprint != ''",
                     key_types=(("prefix_fingerprint", "Nullable(String)"), ("input_tokens", "UInt64")),
                     having="uniqExact(ifNull(request_id, event_id)) >= 2")
V17_SHAPES = (ADVICE_HOURS, PREFIX_WINDOWS, CUSTOMER_DAYS)  # what migration 17 built (it still builds that)
SHAPES = (*V17_SHAPES, FEATURE_FAILURES, LOOP_SHAPES)

V17_WATERMARKS_VIEW = watermarks_view((*ROLLUPS, *V17_SHAPES))
V19_WATERMARKS_VIEW = watermarks_view((*ROLLUPS, *SHAPES))  # migration 19's; the advisor's hours are added below


def backfill(store: Store, run: Callable[[str], None], grains: tuple[Rollup, ...] = V17_SHAPES) -> None:
    """Migration step: compute the new rollups (``grains``) from the raw events already stored, a month at a
    time, and record their periods done at the marks made before the computation began (a row marked later
    was perhaps not durable yet: its period stays pending, and the maintainer recomputes it)."""
    began = str(store.query("SELECT toString(now64(3, 'UTC'))").scalar())
    months = [str(r[0]) for r in store.query("SELECT DISTINCT toString(toStartOfMonth(ts)) FROM usage_events "
                                             "ORDER BY 1").rows]
    version = f"toDateTime64('{began}', 3, 'UTC')"
    for rollup in grains:
        for month in months:
            start = f"toDateTime64('{month}', 3, 'UTC')"
            store.command(recompute_sql(rollup, version, start, f"{start} + INTERVAL 1 MONTH"))
        period = f"{rollup.floor}(minute)"
        store.command(f"INSERT INTO rollup_done (rollup, period, mark) SELECT '{rollup.name}', {period} AS p, "
                      f"max(marked_at) FROM rollup_marks WHERE marked_at <= {version} GROUP BY p")
        log.info("%s computed from the raw events of %d month(s)", rollup.name, len(months))


def backfill_storm_windows(store: Store, run: Callable[[str], None]) -> None:
    """Migration step: ``feature_failures`` and ``loop_shapes`` from the raw events already stored
    (see :func:`backfill`)."""
    backfill(store, run, (FEATURE_FAILURES, LOOP_SHAPES))


# -- the advisor at the targets' density (issue 17): rows bounded by keys × hours, not by events ----------------
#
# At 50M events over 28 days the advisor's two largest reads grew with the events: the burst test read
# usage_minutes (minute × six keys: 2.6M rows at 5M events), the caching estimate prefix_windows (five minutes
# × prefix: 395,000 rows at 5M, about one call a row). Per hour, both questions have a form whose rows are
# bounded by the keys × hours whatever the density (BENCHMARKS.md, "The commands at the targets' density").

# Provider prompt caches: (minimum cacheable prefix tokens, lifetime seconds without a hit). OpenAI: automatic
# from 1,024 tokens, kept 5–10 minutes idle; Anthropic: 1,024 (2,048 for Haiku models, the advisor's
# HAIKU_MIN_CACHEABLE) for 5 minutes by default; Google's implicit caching from 1,024 tokens. Here, not in the
# advisor, because ``prefix_hours`` counts its hits under these lifetimes: changing one means recomputing
# that rollup (a migration that drops its rows and backfills it).
CACHE_RULES = {"openai": (1024, 300), "azure": (1024, 300), "anthropic": (1024, 300), "aws": (1024, 300),
               "google": (1024, 300)}


def cache_lifetime_ms(provider: str) -> str:
    """SQL: the prompt cache's lifetime in milliseconds for the price's provider (SQL), 0 when it has none."""
    return (f"ifNull(transform({provider}, {list(CACHE_RULES)}, {[r[1] * 1000 for r in CACHE_RULES.values()]}, "
            "0), 0)")


# The hour's prefixed calls in order, (ms, event_id, cached prefix tokens, saving): each call after the
# first is a hit when the call before it came within the lifetime (arrays pair each call with its predecessor).
_CALLS = f"arraySort(groupArray((toUnixTimestamp64Milli(ts), event_id, {PREFIX_CACHED}, {PREFIX_SAVING})))"
_PAIRS = f"arrayPopFront({_CALLS}), arrayPopBack({_CALLS})"
_HIT = f"a.1 - b.1 <= {cache_lifetime_ms('price_provider_id')}"

PREFIX_HOUR_MEASURES: tuple[Measure, ...] = (
    Measure("calls", "UInt64", "count()", "sum(calls)"),
    Measure("first_ts", "DateTime64(3, 'UTC')", "min(ts)", "min(first_ts)"),
    Measure("last_ts", "DateTime64(3, 'UTC')", "max(ts)", "max(last_ts)"),
    # within one period only (a period's hits need its calls in order): a period is one row of the rollup
    Measure("hit_calls", "UInt64", f"arrayCount((a, b) -> {_HIT}, {_PAIRS})", "sum(hit_calls)"),
    Measure("hit_cached_tokens", "UInt64", f"arraySum((a, b) -> if({_HIT}, a.3, 0), {_PAIRS})",
            "sum(hit_cached_tokens)"),
    Measure("hit_saving_usd", "Decimal(38, 18)", f"arraySum((a, b) -> if({_HIT}, a.4, 0), {_PAIRS})",
            "sum(hit_saving_usd)"),
    Measure("first_cached_tokens", "UInt64", f"argMin({PREFIX_CACHED}, {_FIRST})",
            "argMin(first_cached_tokens, first_ts)"),
    Measure("first_saving_usd", "Decimal(38, 18)", f"argMin({PREFIX_SAVING}, {_FIRST})",
            "argMin(first_saving_usd, first_ts)"),
)

# Per hour × feature × price's model × prefix: the hits inside the hour, and the first and last call's time
# and the first call's share, so the reader tells whether an hour's first call repeats the previous hour's
# last (the lifetime is shorter than an hour). 230,000 rows at 5M events against prefix_windows' 395,000; at
# most hours × the prefixes in use (1,008 here) at any density.
PREFIX_HOURS = Rollup("prefix_hours", "hour", "toStartOfHour(ts)", timedelta(hours=1), PREFIX_WINDOWS.keys,
                      measures=PREFIX_HOUR_MEASURES, where=PREFIX_WINDOWS.where, key_types=PREFIX_WINDOWS.key_types)

# Per hour × feature: how many of the hour's minutes had each number of calls (attempts), calls → minutes.
# The burst test's "share of calls in the busiest minutes" needs the minutes' counts, not which minutes they
# were: hours add up by summing these maps (their minutes are other minutes), and a row holds a few distinct
# counts, not a minute each. 133,000 rows at 5M events, at most hours × features at any density; usage_minutes
# (minute × six keys) held 2.6M for the same month.
_PER_MINUTE = "mapValues(sumMap(map(toUInt8(toMinute(ts)), toUInt64(1))))"
BURST_HOURS = Rollup("burst_hours", "hour", "toStartOfHour(ts)", timedelta(hours=1), ("feature",), measures=(
    Measure("minutes_by_calls", "Map(UInt64, UInt64)",
            f"mapFromArrays(arraySort(arrayDistinct({_PER_MINUTE})), arrayMap(c -> toUInt64(arrayCount("
            f"x -> x = c, {_PER_MINUTE})), arraySort(arrayDistinct({_PER_MINUTE}))))",
            "sumMap(minutes_by_calls)"),
), where="feature IS NOT NULL")

# Per hour × team, feature and model: what the report's tables ask (spend by team, top features and models,
# cost per request, retry waste, the totals) and the advisor's retry waste (failures by kind). usage_hours
# keeps nine keys (453,609 rows a month at 5M events, growing nearly with the events); these three are 351
# combinations here, so a week is at most 168 × the combinations in use, whatever the density. The request
# sets are uniqExact states, as in usage_hours: counting distinct requests exactly costs what the requests are.
REPORT_HOURS = Rollup("report_hours", "hour", "toStartOfHour(ts)", timedelta(hours=1), ("team", "feature", "model"),
                      measures=tuple(m for m in MEASURES if m.name in (
                          "attempts", "requests", "input_tokens", "output_tokens", "cost_usd", "failed_attempts",
                          "failed_cost_usd", "unpriced_attempts", "errors", "timeouts", "rate_limited",
                          "invalid_outputs")))

ADVISOR_HOURS = (PREFIX_HOURS, BURST_HOURS, REPORT_HOURS)
SHAPES = (*SHAPES, *ADVISOR_HOURS)
WATERMARKS_VIEW = watermarks_view((*ROLLUPS, *SHAPES))


def backfill_advisor_hours(store: Store, run: Callable[[str], None]) -> None:
    """Migration step: :func:`backfill` for ``prefix_hours``, ``burst_hours`` and ``report_hours``."""
    backfill(store, run, ADVISOR_HOURS)
