"""The savings advisor: dollar-estimated opportunities from the metered traffic.

``spendstream advise --since 30d`` looks at one period and names concrete levers,
each with its evidence, an estimated monthly saving (the period's saving scaled
to 30 days), the assumptions behind it and a confidence:

1. ``prompt_caching`` — calls that repeat a prompt prefix (the emitter's
   ``prefix_fingerprint``/``prefix_tokens``) within the provider's cache lifetime,
   at or above its minimum cacheable length, but were not served from cache:
   repeated prefix tokens × (input price − cached price) of each call's model.
2. ``batch`` — features declared not latency-sensitive (tag
   ``latency_sensitive=false``), or inferred so (no ``user_facing=true`` tag and
   bursty, scheduled-looking traffic), on realtime endpoints: cost × the
   provider's published batch discount.
3. ``right_size`` — features on a frontier model whose calls are short in and
   out: the same tokens at the provider's smaller tier. Needs a quality check.
4. ``output_cap`` — features whose output has a long tail (p99 ≫ median) with no
   ``max_tokens`` set: the output tokens above the p95, at the output price.
5. ``retry_waste`` — what failed attempts cost, per feature.
6. ``idle_gpu`` — self-hosted deployments whose peak utilisation would fit on fewer
   GPUs: the GPU-hours (and dollars) of the GPUs not needed.

Thresholds are module constants, named below; change them in one place.

Where the numbers come from: rollups, never four weeks of raw events (the partial hours at
the period's ends, and what the maintainer has not caught up with, are read from raw:
``ranges.between``), each read bounded by its keys × hours, not by the events: the burst
test's calls per feature and minute are ``burst_hours``' (per hour, minutes per count);
retry waste's failures and their cost ``report_hours'`` (hour × team, feature, model); repeated prefixes and the gaps
between them ``prefix_hours``' (per hour, its hits and its first and last call); batch's
tags, right-sizing's tokens and the output tail ``advice_hours``', in one read for the three
(:func:`advice_sums`; :mod:`spendstream.sinks.shapes`). Token quantiles come from
fixed log-spaced buckets (about 19 % wide) and are reported as the upper edge of the
bucket that holds them ("p95 ≤ 1,448"); the output cap proposed is such an edge, so the
saving computed for it is exact.

Savings are scaled to a month by the span of the period the store has observed (from
its first event, if that is later than the period's start), so the numbers follow the
traffic, not the ``--since`` flag; bursts are judged over the observed minutes too; and
a feature that declares itself user-facing (tag ``user_facing=true``) is never told to
use a batch API.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from typing import Any

from spendstream.pricing.catalog import BATCH_DISCOUNT_PERCENT
from spendstream.pricing.engine import Pricer
from spendstream.sinks.ranges import between
from spendstream.sinks.rollups import watermarks
from spendstream.sinks.shapes import (
    ADVICE_HOURS,
    BURST_HOURS,
    CACHE_RULES,
    PREFIX_HOURS,
    REPORT_HOURS,
    bucket_edge,
    cache_lifetime_ms,
    quantile_edge,
)
from spendstream.sinks.store import TextQuerier, query_result, sql_time

# Provider prompt caches (minimum cacheable prefix, lifetime): CACHE_RULES, kept beside the rollup that
# counts hits under them (sinks/shapes.py).
HAIKU_MIN_CACHEABLE = 2048
CACHE_HIT_SHARE_LOW = 0.5          # a feature already caching more than this is left alone
MIN_MONTHLY_SAVING = Decimal("1")  # below a dollar a month is noise
BURSTY_SHARE = 0.6                 # share of calls in the busiest 1 % of the period's minutes
SHORT_INPUT_P90, SHORT_OUTPUT_P90 = 3_000, 300
SMALLER_TIER = {  # frontier model (catalog id prefix) → the provider's smaller tier
    ("openai", "gpt-4o"): "gpt-4o-mini", ("openai", "gpt-4.1"): "gpt-4.1-mini", ("openai", "gpt-5"): "gpt-5-mini",
    ("openai", "o3"): "o4-mini", ("anthropic", "claude-opus"): "claude-sonnet-4-5",
    ("anthropic", "claude-sonnet"): "claude-haiku-4-5", ("anthropic", "claude-3-5-sonnet"): "claude-3-5-haiku",
    ("google", "gemini-2.5-pro"): "gemini-2.5-flash", ("google", "gemini-1.5-pro"): "gemini-1.5-flash",
}
TAIL_RATIO, MIN_TAIL_TOKENS, UNCAPPED_SHARE = 4.0, 500, 0.8
WASTE_SHARE = 0.02
GPU_TARGET_UTILISATION = 0.8


@dataclass(frozen=True, slots=True)
class Opportunity:
    kind: str
    subject: str
    monthly_saving_usd: Decimal
    period_saving_usd: Decimal
    confidence: str  # high, medium, low
    evidence: str
    assumptions: str

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in asdict(self).items()}


def advise(querier: TextQuerier, since: datetime, until: datetime, pricer: Pricer | None = None) -> list[Opportunity]:
    """Every opportunity worth at least MIN_MONTHLY_SAVING a month, largest first.

    A period's saving is scaled to 30 days by the span the store has observed of it
    (:func:`observed_span`), not by the period asked for: on a store holding two hours
    of traffic, ``--since 7d`` and ``--since 2h`` give the same monthly numbers.
    """
    span = observed_span(querier, since, until)
    scale = Decimal(30 * 86_400) / Decimal(span.total_seconds())
    params = {"since": sql_time(since), "until": sql_time(until)}
    window = "ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')}"
    found: list[Opportunity] = []
    # every rollup's watermark in one statement, read once, rather than one in each of the finders' reads (a
    # moment earlier than each read's own: an event marked in between is read once its hour is recomputed)
    marks = watermarks(querier, [ADVICE_HOURS, PREFIX_HOURS, BURST_HOURS, REPORT_HOURS])
    batch, right_size, output_cap = advice_sums(querier, params, marks)
    for finder in (partial(_caching, marks=marks), partial(_batch, rows=batch, marks=marks),
                   partial(_right_size, rows=right_size), partial(_output_cap, rows=output_cap, marks=marks),
                   partial(_retry_waste, marks=marks), _idle_gpu):
        for kind, subject, saving, confidence, evidence, assumptions in finder(querier, params, window, pricer, until):
            monthly = (saving * scale).quantize(Decimal("0.01"))
            if monthly >= MIN_MONTHLY_SAVING:
                found.append(Opportunity(kind, subject, monthly, saving, confidence, evidence, assumptions))
    # ties by lever and subject: two keys with the same saving come back in the same order every run (the
    # finders' rows come in whatever order ClickHouse's threads finish)
    return sorted(found, key=lambda o: (-o.monthly_saving_usd, o.kind, o.subject))


# A store younger than this is scaled as if it were this old: its first minutes (or one
# burst) are not multiplied into a month as though they never stopped.
MIN_OBSERVED_SPAN = timedelta(hours=1)


def observed_span(querier: TextQuerier, since: datetime, until: datetime) -> timedelta:
    """How much of ``[since, until)`` the store has observed: from ``since``, or from its first
    event when that is later (then at least MIN_OBSERVED_SPAN), to ``until``. (The first
    event is found by the time-ordered sort key, without reading the rest.)"""
    first = query_result(querier, "SELECT toString(min(ts)) FROM usage_events").scalar()
    if not first or str(first).startswith("1970"):  # an empty store
        return until - since
    first_seen = datetime.fromisoformat(str(first)).replace(tzinfo=timezone.utc)
    if first_seen <= since:
        return until - since
    return max(until - first_seen, MIN_OBSERVED_SPAN)


def caching_potential(querier: TextQuerier, params: dict[str, str], window: str = "",
                      marks: Mapping[str, datetime] | None = None) -> list[dict[str, Any]]:
    """Per feature/provider/model: calls, repeated-prefix hits within lifetime, and what caching them saves.

    A call is a hit when an earlier call of the period sent the same prefix (fingerprint and
    length) to the same feature and model at most the provider's cache lifetime before it, and
    the prefix is at least the provider's minimum cacheable length. Read from ``prefix_hours``
    (hour × prefix, :mod:`spendstream.sinks.shapes`), which counts the hits inside each hour;
    an hour's first call is one when the previous hour's last call is close enough (a
    lifetime is shorter than an hour, so no earlier hour can be). ``ranges.between`` gives one
    row per hour and prefix (the rollup's rows, and raw grouped by the same keys, for hours
    that do not overlap), so the rows are read as they come, not grouped again.
    ``window`` is not used (the period is ``params``' since/until); kept for callers. ``marks``: watermarks
    read beforehand (``rollups.watermarks``).
    """
    providers = list(CACHE_RULES)
    min_tokens = ("if(positionCaseInsensitive(price_model_id, 'haiku') > 0, "
                  f"{HAIKU_MIN_CACHEABLE}, transform(price_provider_id, {providers}, "
                  f"{[r[0] for r in CACHE_RULES.values()]}, 0))")
    ttl_ms = cache_lifetime_ms("price_provider_id")
    hours = between(PREFIX_HOURS, "{t}", since="{since:DateTime64(3, 'UTC')}", until="{until:DateTime64(3, 'UTC')}",
                    marks=marks)
    keys = "feature, price_provider_id, price_model_id, prefix_fingerprint, prefix_tokens"
    return query_result(querier, f"""
        SELECT feature, price_provider_id AS provider, price_model_id AS model, sum(n) AS calls,
               sum(hit_calls) AS hits, sum(hit_calls * prefix_tokens) AS repeated_prefix_tokens,
               sum(if(eligible, cached + if(first_hit, cached_first, 0), 0)) AS already_cached_tokens,
               sum(if(eligible, saving + if(first_hit, saving_first, 0), 0)) AS saving_usd
        FROM (
            SELECT *, prefix_tokens >= {min_tokens} AND {ttl_ms} > 0 AS eligible,
                   if(eligible, inner_hits + first_hit, 0) AS hit_calls
            FROM (
                SELECT *, row_number() OVER w > 1
                          AND dateDiff('millisecond', lagInFrame(last_at, 1, last_at) OVER w, first_at) <= {ttl_ms}
                          AS first_hit
                FROM (SELECT period, {keys}, calls AS n, first_ts AS first_at, last_ts AS last_at,
                             hit_calls AS inner_hits, hit_cached_tokens AS cached, hit_saving_usd AS saving,
                             first_cached_tokens AS cached_first, first_saving_usd AS saving_first,
                             cityHash64({keys}) AS key_hash
                      FROM {hours})
                -- the hash first: sorting by it is cheaper than by five strings, and the keys after it keep
                -- two prefixes whose hashes collide apart
                WINDOW w AS (PARTITION BY key_hash, {keys} ORDER BY period
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
            )
        )
        GROUP BY feature, provider, model
        ORDER BY saving_usd DESC, feature, provider, model""", params).dicts()


def _caching(querier, params, window, pricer, until, *, marks=None):
    for row in caching_potential(querier, params, window, marks):
        repeated, cached = int(row["repeated_prefix_tokens"] or 0), int(row["already_cached_tokens"] or 0)
        if not repeated or cached / repeated > CACHE_HIT_SHARE_LOW:
            continue
        min_tokens, ttl = CACHE_RULES.get(row["provider"], (0, 0))
        yield ("prompt_caching", f"feature={row['feature']} model={row['model']}", row["saving_usd"],
               "high" if row["hits"] >= 100 else "medium",
               f"{row['hits']:,} of {row['calls']:,} calls repeated a prompt prefix within {ttl // 60} min; "
               f"{repeated:,} repeated prefix tokens, {cached / repeated:.0%} of them served from cache",
               f"{row['provider']} caches prefixes of at least {min_tokens:,} tokens for {ttl // 60} minutes without "
               "a hit; saving = uncached repeated prefix tokens × (input − cached input price); cache-write "
               "premiums (Anthropic) are not subtracted; the prefix must be byte-identical and first in the prompt")


# advice_sums' grouping sets by grouping(price_provider_id, price_model_id): a bit per column left out of the set
_PER_PROVIDER, _PER_MODEL, _PER_FEATURE = 0b01, 0b00, 0b11


def advice_sums(querier: TextQuerier, params: dict[str, str],
                marks: Mapping[str, datetime] | None = None) -> tuple[list[dict[str, Any]], ...]:
    """The rows the batch, right-size and output-cap tests read from ``advice_hours``, in one read of it.

    Each test groups the period's rows by its own keys — per feature × provider (realtime calls and their
    tags), per feature × provider × model (successful calls and their token sizes), per feature (output sizes
    and caps) — so one ``GROUPING SETS`` read answers all three: the rollup's rows, its watermark and the
    partial hours at the period's ends from raw are read once rather than three times (at 5M events, a week:
    ~0.75 s against ~1.1 s for the three reads, BENCHMARKS.md). Returns ``(batch, right_size, output_cap)``,
    each the rows its test's own query returned: the same columns, the same ``HAVING``.
    """
    measures = ("realtime_cost_usd", "realtime_calls", "realtime_declared", "realtime_user_facing", "ok_calls",
                "ok_cost_usd", "ok_input_hist", "ok_output_hist", "ok_uncached_tokens", "ok_cached_tokens",
                "ok_cache_write_tokens", "ok_output_tokens", "calls", "output_hist", "uncapped_calls")
    # The period's rows are summed once per feature × provider × model (the finest of the three sets), and the
    # sets are sums of those few rows: grouping the rollup's rows by each set would compute every sum, maps
    # included, once per set. The maps each set's test does not read are left empty.
    rows = query_result(querier, f"""
        SELECT grouping(provider, model) AS g, feature, provider, model,
               sum(realtime_cost_usd) AS realtime_cost_usd, sum(realtime) AS realtime,
               sum(realtime_declared) AS realtime_declared, sum(realtime_user_facing) AS realtime_user_facing,
               sum(ok) AS ok, sum(ok_cost_usd) AS ok_cost_usd,
               if(g = {_PER_MODEL}, sumMap(input_hist), map()) AS input_hist,
               if(g = {_PER_MODEL}, sumMap(ok_output_hist), map()) AS ok_output_hist,
               sum(uncached) AS uncached, sum(cached) AS cached, sum(writes) AS writes, sum(output) AS output,
               sum(all_calls) AS all_calls, if(g = {_PER_FEATURE}, sumMap(output_hist), map()) AS output_hist,
               sum(uncapped) AS uncapped
        FROM (
            SELECT feature, price_provider_id AS provider, price_model_id AS model,
                   sum(realtime_cost_usd) AS realtime_cost_usd, sum(realtime_calls) AS realtime,
                   sum(realtime_declared) AS realtime_declared, sum(realtime_user_facing) AS realtime_user_facing,
                   sum(ok_calls) AS ok, sum(ok_cost_usd) AS ok_cost_usd, sumMap(ok_input_hist) AS input_hist,
                   sumMap(ok_output_hist) AS ok_output_hist, sum(ok_uncached_tokens) AS uncached,
                   sum(ok_cached_tokens) AS cached, sum(ok_cache_write_tokens) AS writes,
                   sum(ok_output_tokens) AS output, sum(calls) AS all_calls, sumMap(output_hist) AS output_hist,
                   sum(uncapped_calls) AS uncapped
            FROM {_advice(params, measures, marks)}
            GROUP BY feature, price_provider_id, price_model_id)
        GROUP BY GROUPING SETS ((feature, provider), (feature, provider, model), (feature))""", params).dicts()
    batch = [{"feature": r["feature"], "provider": r["provider"], "cost_usd": r["realtime_cost_usd"],
              "realtime": r["realtime"], "declared": r["realtime_declared"] == r["realtime"],
              "not_user_facing": r["realtime_user_facing"] == 0}
             for r in rows if r["g"] == _PER_PROVIDER and r["realtime"] > 0]
    right_size = [{"feature": r["feature"], "provider": r["provider"], "model": r["model"], "ok": r["ok"],
                   "cost_usd": r["ok_cost_usd"], "input_hist": r["input_hist"], "output_hist": r["ok_output_hist"],
                   "uncached": r["uncached"], "cached": r["cached"], "writes": r["writes"], "output": r["output"]}
                  for r in rows if r["g"] == _PER_MODEL and r["ok"] > 0]
    # ClickHouse divided these (Float64): 0 / 0 is nan there, and a nan share is never uncapped enough
    output_cap = [{"feature": r["feature"], "all_calls": r["all_calls"], "output_hist": r["output_hist"],
                   "uncapped_share": r["uncapped"] / r["all_calls"] if r["all_calls"] else math.nan}
                  for r in rows if r["g"] == _PER_FEATURE]
    return batch, right_size, output_cap


def _batch(querier, params, window, pricer, until, *, rows, marks=None):
    # the busiest 1 % of the minutes the store observed of the period (not of the period asked
    # for: on two hours of traffic, 1 % of a week's minutes would hold every call)
    since = datetime.fromisoformat(params["since"]).replace(tzinfo=timezone.utc)
    busiest = max(1, math.ceil(observed_span(querier, since, until).total_seconds() / 60 * 0.01))
    bursts = busiest_shares(querier, params, busiest, marks)
    for row in rows:
        discount = BATCH_DISCOUNT_PERCENT.get(row["provider"])
        bursty = bursts.get(row["feature"], 0.0) >= BURSTY_SHARE
        # a feature declared user-facing waits for no batch API, whatever else it declares
        if discount is None or not row["not_user_facing"] or not (row["declared"] or bursty):
            continue
        why = ("declared latency_sensitive=false" if row["declared"] else
               f"no user_facing tag and {bursts[row['feature']]:.0%} of calls in the busiest 1 % of the period's "
               "minutes (scheduled-looking bursts)")
        yield ("batch", f"feature={row['feature']} provider={row['provider']}", row["cost_usd"] * discount / 100,
               "high" if row["declared"] else "medium",
               f"{row['realtime']:,} realtime calls costing ${row['cost_usd']:.2f}; {why}",
               f"{row['provider']}'s batch API bills {discount}% less and answers within 24 h; the work must tolerate "
               "that delay")


def busiest_shares(querier: TextQuerier, params: dict[str, str], busiest: int,
                   marks: Mapping[str, datetime] | None = None) -> dict[str, float]:
    """Per feature: the share of its calls (attempts) made in its ``busiest`` busiest minutes of the period.

    Which minutes are the busiest does not matter, only their counts: ``burst_hours`` holds per
    hour and feature how many minutes had each number of calls (the range's partial hours at
    its ends from raw, ``ranges.between``), summed here over the hours, and the ``busiest``
    largest counts are taken from the top — the same sum as ranking the minutes one by one.
    """
    hours = between(BURST_HOURS, "{t}", since="{since:DateTime64(3, 'UTC')}", until="{until:DateTime64(3, 'UTC')}",
                    marks=marks)
    return {r["feature"]: float(r["busiest_share"]) for r in query_result(querier, f"""
        SELECT feature, sum(c * toUInt64(least(minutes, greatest(toInt64({busiest}) - toInt64(above), 0))))
                        / any(total) AS busiest_share
        FROM (
            SELECT feature, c, minutes,
                   sum(minutes) OVER (PARTITION BY feature ORDER BY c DESC
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS above,
                   sum(c * minutes) OVER (PARTITION BY feature) AS total
            FROM (SELECT feature, sumMap(minutes_by_calls) AS counted FROM {hours} GROUP BY feature)
            ARRAY JOIN mapKeys(counted) AS c, mapValues(counted) AS minutes)
        GROUP BY feature""", params).dicts()}


def _right_size(querier, params, window, pricer, until, *, rows):
    pricer = pricer or Pricer()
    for row in rows:
        # quantiles from the token-size buckets: "90 % of calls are at most this long"
        row["p90_in"] = quantile_edge(_histogram(row["input_hist"]), 0.9)
        row["p90_out"] = quantile_edge(_histogram(row["output_hist"]), 0.9)
        smaller = next((small for (provider, prefix), small in SMALLER_TIER.items()
                        if row["provider"] == provider and row["model"].startswith(prefix)
                        and not row["model"].startswith(small)), None)
        if smaller is None or row["p90_in"] > SHORT_INPUT_P90 or row["p90_out"] > SHORT_OUTPUT_P90:
            continue
        card = pricer.group_price(row["provider"], smaller, until.replace(second=0, microsecond=0),
                                  "realtime", None).applied.card
        if card is None:
            continue
        rates = card.at(0)  # short calls are below every long-context tier
        small_cost = (row["uncached"] * rates[0] + row["cached"] * rates[1] + row["writes"] * rates[2]
                      + row["output"] * rates[4]) / 1_000_000
        saving = row["cost_usd"] - small_cost
        if saving <= 0:
            continue
        yield ("right_size", f"feature={row['feature']} model={row['model']}", saving, "low",
               f"{row['ok']:,} successful calls; 90 % have ≤ {row['p90_in']:,.0f} input and ≤ "
               f"{row['p90_out']:,.0f} output tokens (token-size buckets' upper edges; classification/extraction "
               f"shape); ${row['cost_usd']:.2f} on "
               f"{row['model']}, ${small_cost:.2f} on {smaller} at today's list price",
               f"NEEDS A QUALITY CHECK: route a sample to {smaller} and compare answers before switching; "
               "saving = the same tokens at the smaller tier's price")


def _output_cap(querier, params, window, pricer, until, *, rows, marks=None):
    for row in rows:
        # quantiles from the token-size buckets (each the upper edge of the bucket holding it)
        histogram = _histogram(row["output_hist"])
        median, p95, p99 = (quantile_edge(histogram, level) for level in (0.5, 0.95, 0.99))
        if p99 < MIN_TAIL_TOKENS or p99 < TAIL_RATIO * max(median, 1) or row["uncapped_share"] < UNCAPPED_SHARE:
            continue
        cap = p95  # a bucket's edge: the calls above it are whole buckets, so what the cap saves is exact
        bucket = next(b for b in sorted(histogram) if bucket_edge(b) == cap)
        saving = query_result(querier, f"""
            SELECT (arraySum(mapValues(mapFilter((b, v) -> b > {bucket}, sumMap(uncapped_output_value))))
                    - {cap} * arraySum(mapValues(mapFilter((b, v) -> b > {bucket}, sumMap(uncapped_output_price)))))
                   / 1000000
            FROM {_advice(params, ("uncapped_output_value", "uncapped_output_price"), marks)}
            WHERE feature = {{feature:String}}""", params | {"feature": row["feature"]}).scalar() or Decimal(0)
        yield ("output_cap", f"feature={row['feature']}", saving, "medium",
               f"output median ≤ {median:,}, p95 ≤ {p95:,}, p99 ≤ {p99:,} tokens (token-size buckets' upper edges); "
               f"{row['uncapped_share']:.0%} of {row['all_calls']:,} calls set no max_tokens",
               f"a max_tokens of {cap:,} (about the p95) truncates the longest 5 % of answers: check they are not "
               "needed; saving = the output tokens above it at each call's output price")


def _advice(params: dict[str, str], measures: tuple[str, ...] | None = None,
            marks: Mapping[str, datetime] | None = None) -> str:
    """``advice_hours``' rows for the period (its partial hours from raw): per hour × feature × price's model."""
    return between(ADVICE_HOURS, "0", measures, since="{since:DateTime64(3, 'UTC')}",
                   until="{until:DateTime64(3, 'UTC')}", marks=marks)


def _histogram(value: Any) -> dict[int, int]:
    """A bucket → calls map as the JSON result carries it (keys and counts as text)."""
    return {int(k): int(v) for k, v in (value or {}).items()}


def _retry_waste(querier, params, window, pricer, until, *, marks=None):
    # from report_hours (hour × team, feature, model; the partial hours at the period's ends from raw):
    # failed attempts are counted priced or not; what they cost is the priced ones'
    measures = ["failed_cost_usd", "cost_usd", "failed_attempts", "rate_limited", "timeouts", "errors",
                "invalid_outputs"]
    hours = between(REPORT_HOURS, "0", measures, since="{since:DateTime64(3, 'UTC')}",
                    until="{until:DateTime64(3, 'UTC')}", where="feature IS NOT NULL", marks=marks)
    rows = query_result(querier, f"""
        SELECT feature, sum(failed_cost_usd) AS wasted_usd, sum(cost_usd) AS cost_usd,
               sum(failed_attempts) AS failed, sum(rate_limited) AS rate_limited, sum(timeouts) AS timeouts,
               sum(errors) AS errors, sum(invalid_outputs) AS invalid
        FROM {hours}
        GROUP BY feature""", params).dicts()
    for row in rows:
        wasted, cost = row["wasted_usd"] or Decimal(0), row["cost_usd"] or Decimal(0)
        if not wasted or (cost and wasted / cost < WASTE_SHARE):
            continue
        yield ("retry_waste", f"feature={row['feature']}", wasted, "high",
               f"{row['failed']:,} failed attempts cost ${wasted:.2f} ({wasted / cost:.1%} of the feature's spend): "
               f"{row['rate_limited']} rate-limited, {row['errors']} errors, {row['timeouts']} timeouts, "
               f"{row['invalid']} invalid outputs",
               "the money spent on attempts that produced nothing usable; fixing the cause (backoff, timeouts, "
               "output validation) saves most of it")


def _idle_gpu(querier, params, window, pricer, until):
    rows = query_result(querier, """
        SELECT s.deployment AS deployment, any(d.gpu_count) AS gpus, any(d.usd_per_gpu_hour) AS usd_per_gpu_hour,
               sum(s.interval_s) / 3600 AS hours,
               quantileIf(0.95)(s.gpu_utilization, s.gpu_utilization IS NOT NULL) AS p95_gpu,
               quantileIf(0.95)(s.kv_cache_utilization, s.kv_cache_utilization IS NOT NULL) AS p95_kv,
               countIf(s.gpu_utilization IS NOT NULL) AS gpu_readings
        FROM gpu_samples AS s FINAL
        INNER JOIN (SELECT * FROM gpu_deployments FINAL) AS d ON d.name = s.deployment
        WHERE s.ts >= {since:DateTime64(3, 'UTC')} AND s.ts < {until:DateTime64(3, 'UTC')}
        GROUP BY deployment""", params).dicts()
    for row in rows:
        use = float(row["p95_gpu"] if row["gpu_readings"] else row["p95_kv"] or 0)
        needed = max(1, math.ceil(use * row["gpus"] / GPU_TARGET_UTILISATION))
        spare = int(row["gpus"]) - needed
        if spare <= 0:
            continue
        gpu_hours = Decimal(str(round(float(row["hours"]), 6))) * spare
        source = "GPU utilisation" if row["gpu_readings"] else "KV-cache utilisation (no GPU utilisation source)"
        yield ("idle_gpu", f"deployment={row['deployment']}", gpu_hours * row["usd_per_gpu_hour"],
               "medium" if row["gpu_readings"] else "low",
               f"p95 {source} {use:.0%} on {row['gpus']} GPUs over {float(row['hours']):.1f} h: {needed} would carry "
               f"it at {GPU_TARGET_UTILISATION:.0%}; {float(gpu_hours):,.1f} GPU-hours spare in the period",
               "consolidate onto fewer GPUs (or scale to zero off-peak); the peak must fit, and model memory must "
               "still fit on the remaining GPUs")

