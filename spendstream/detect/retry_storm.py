"""Retry storms per feature and per customer — storms, slow burns, agent loops — and what they cost.

The decisions are :class:`~spendstream.detect.storm.RetryStormRule`'s; the incident's life is
:class:`~spendstream.detect.incidents.Hysteresis`'s (one incident per subject until it
resolves), and the subjects one storm lifts (a pair, its feature, its customer) are one incident, delivered
under the most specific (:mod:`spendstream.detect.correlate`, as spend anomalies). A pass reads (issue 17:
what a rollup window reads, not two hours of raw):

- **the fast window** (the last ``window_minutes``) from raw ``usage_events FINAL``, per
  subject and provider: attempts, failures, the longest request, the error mix (429,
  5xx, timeouts, invalid output: HTTP codes no rollup keeps) and what the other traffic on the
  provider failed at in the minutes of the subject's attempts (a bursty subject that sent most of its
  window inside a two-minute provider blip is held to the blip's ratio, not the window's average). Customers have no
  sub-hour rollup worth its upkeep (at 50,000 customers a customer × minute row holds
  about one event), so this window is read raw for features and customers alike. Its
  subjects include each feature × customer **pair**, judged on this window alone (a storm, or a loop that
  is its feature's and its customer's too: the pair names their one incident; never a burn): one customer of a busy
  feature failing 40 % for 15 minutes is a few % more failures in both totals and 20× its pair's;
- **the slow window** (the last ``slow_minutes``): features from ``feature_failures``
  (five minutes × feature × provider, :mod:`spendstream.sinks.shapes`, through
  :func:`spendstream.detect.windows.windowed`: whole periods from the rollup, the partial
  periods at the edges and anything after the rollup's watermark from raw — exactly raw's
  answer, in rows bounded by features × providers rather than by the traffic), with the
  window a feature's slow burn must still fail in (``burn_now_minutes``). Customers only
  where the slow window can change the verdict or is stated in a message: those whose
  fast window already meets a slow burn's "still failing now" test, or that loop
  (:meth:`RetryStormRule.slow_matters`), or that have an open incident (a burn's resolve waits for its slow
  window: :func:`~spendstream.detect.storm.settled`), read (``customer IN …``) through ``windowed`` too, from
  ``customer_hours`` (its whole hours; an hour × customer row holds about two events at 50M, so it
  halves what raw would read, not more); every other customer's slow counts are left at zero, which
  no decision reads;
- **request shapes** in the fast window (feature, customer, prompt-prefix fingerprint,
  model, input size): the most distinct requests of one shape and what the repeats cost.
  Only requests *with* a fingerprint count: fixed-size requests without one are ordinary
  traffic (a spike of them is the spend detector's), not evidence of a loop;
- **slow loops** over the slow window: the same shapes, summed over the ten-minute periods
  they repeated in, from ``loop_shapes`` (which keeps only repeated shapes, so its rows are
  what loops make) and raw after its watermark — an agent calling once a minute for hours
  never repeats 12 times in ten minutes;

and each subject's own failure ratio from this hour's baselines (:mod:`spendstream.detect.baseline`).
Customers that cannot be hot (:meth:`RetryStormRule.can_fire`: too few failures in the fast window,
no loop) and have no open incident are left out before any of that is looked up or judged.
What all other subjects fail at on a provider is summed over the feature subjects only
(``RetryStormRule.judge``'s ``counted``: each event once, whatever customers were read).
An incident resolves only once its slow window is calm too: a burn's "still failing now" test flips with a few
failures either way, and each flip was a resolve and a new page. A storm's failed attempts stay in the slow window
after it ends: they would hold its incident for two hours, and after its resolve re-open the subject as a burn. So
a pass that finds a storm on a subject whose incident fires marks the subject (``STORMED``, kept in
``detector_incidents`` and read with the open incidents; a pair's storm marks its feature and its customer too),
and a subject marked within the slow window is judged on its slow window from the mark on
(:func:`storm_free_windows`, read only for such subjects): a storm resolves once its fast window is calm, and a
burn after it must be shown by new failures (:func:`~spendstream.detect.storm.settled`).
Storms and slow burns need a day of history (no page on a fresh store); loops do not. A pair's history is
its baseline's, kept for the costliest pairs only (``baseline.PAIR_SUBJECTS``): another pair is never warm.
The message states the dollars wasted: billed failed attempts plus repeated calls (a pair: its billed failed attempts
in the slow window, read only for a pair that fires, :func:`pair_windows`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.detect import baseline, raw_window, state
from spendstream.detect.correlate import Step, and_list, correlate, headline, lifted, parents
from spendstream.detect.incidents import Hysteresis
from spendstream.detect.raw_window import RawWindow
from spendstream.detect.storm import RetryStormRule, others_ratio, settled
from spendstream.detect.windows import Window, windowed
from spendstream.schemas.alert import Alert
from spendstream.sinks import rollups, shapes
from spendstream.sinks.store import Store, TextQuerier, query_result, sql_strings, sql_time

KIND = "retry_storm"
STORMED = f"{KIND}.stormed"  # the mark of a storm already paged, at the pass that found it (storm.settled)
STORM_WARMUP_HOURS = 24
# a storm resolves after three calm passes, however long it was hot: the resolve that waits as long as the incident
# was hot (spend anomalies) removed no storm's extra messages on the harness (a storm's re-fires are slow burns hot
# for a pass or two, its other extra pages a loop's feature and customer) and cost a slow burn's detection, its
# trigger absorbed by an incident held open (BENCHMARKS.md, "Resolves that wait")
# one exception: a pass that saw fewer than ``min_failed`` attempts of the subject in its fast window (a quiet key
# gone silent) shows nothing either way, and is calm patiently: six passes. A sparse storm's bursts can be 20-30 min
# apart on a quiet feature; three silent passes resolved it between two and paged the next burst as a second
# incident (session s22's outside evaluation: one storm, two PagerDuty incidents).
HYSTERESIS = Hysteresis(resolve_after_max=3, patient_after=6)
_SUBJECTS = "arrayJoin([concat('feature=', ifNull(feature, '')), concat('customer=', ifNull(customer, ''))])"
# the fast window's subjects add each feature x customer pair: a storm on one customer of a busy feature is a few %
# of both totals and most of its pair (named as the baselines name it, so its usual ratio is the pair's own)
_FAST_SUBJECTS = ("arrayJoin([concat('feature=', ifNull(feature, '')), concat('customer=', ifNull(customer, '')), "
                  f"{baseline.PAIR_SQL}])")
_MIX = ("rate_limited", "server_errors", "timeouts", "invalid_outputs")
_Counts = tuple[float, float]  # attempts, failed attempts


# the rollups a pass reads (whose watermarks it needs)
ROLLUPS = (shapes.FEATURE_FAILURES, shapes.LOOP_SHAPES, rollups.CUSTOMER_PROVIDER_HOURS, rollups.CUSTOMER_HOURS)


def pass_marks(querier: TextQuerier) -> dict[str, datetime]:
    """The watermarks of the rollups a pass reads, in one statement (each computed in place cost ~12 ms)."""
    return rollups.watermarks(querier, ROLLUPS)


def fast_window(store: Store, *, start: datetime, end: datetime, raw: RawWindow | None = None,
                latest: datetime | None = None) -> list[dict]:
    """:func:`fast_rows` as Python rows."""
    return fast_rows(store, start=start, end=end, raw=raw, latest=latest).to_pylist()


def fast_rows(store: Store, *, start: datetime, end: datetime, raw: RawWindow | None = None,
              latest: datetime | None = None) -> pa.Table:
    """Per subject (feature, customer, feature x customer pair) and provider in ``[start, end)``, from raw:
    attempts, failures, the longest request, errors, and ``others``: what all other traffic on the provider failed
    at in the minutes of the subject's attempts (each minute's ratio weighted by the subject's attempts in it; the
    providers' totals sum the features, as ``RetryStormRule.judge``'s ``counted``, less the subject's own);
    ``latest_attempts``/``latest_failed``: those of ``[latest, end)`` (default ``start``: the whole window), where a
    storm must still fail (``RetryStormRule.storm_now_minutes``).

    As Arrow, not JSON: a row per active customer and provider (thousands in ten busy minutes at 50M events).
    The minutes are a grouping of raw (``raw``: the round's copy of it, :mod:`~spendstream.detect.raw_window`),
    joined with their providers' totals, a grouping of the same rows by provider and minute: the totals' own
    statement over the copy costs a few ms, where a window function over the subjects' minutes sorted them all.
    A feature's subject counts towards the totals as it counts in ``judge``: a name the subjects keep (not ending
    in ``=``) that is not a pair's."""
    source = raw_window.source(raw, start=start, end=end)
    where = "ts >= {a:DateTime64(3, 'UTC')} AND ts < {b:DateTime64(3, 'UTC')}"
    feature = "concat('feature=', ifNull(feature, ''))"
    counted = f"NOT endsWith({feature}, '=') AND NOT position({feature}, {{mark:String}})"
    return store.query_arrow(f"""
        SELECT subject, provider, toFloat64(sum(n)) AS attempts, toFloat64(sum(f)) AS failed,
               toFloat64(max(longest)) AS max_attempt, sum(rl) AS rate_limited, sum(se) AS server_errors,
               sum(tm) AS timeouts, sum(io) AS invalid_outputs, toFloat64(sum(ln)) AS latest_attempts,
               toFloat64(sum(lf)) AS latest_failed,
               sum(n * if(all_n > n, greatest(all_f - f, 0) / (all_n - n), 0)) / attempts AS others
        FROM (SELECT subject, ifNull(provider, '') AS provider, toStartOfMinute(ts) AS minute,
                     count() AS n, countIf(status != 'ok') AS f, max(attempt) AS longest,
                     countIf(ts >= {{l:DateTime64(3, 'UTC')}}) AS ln,
                     countIf(ts >= {{l:DateTime64(3, 'UTC')}} AND status != 'ok') AS lf,
                     countIf(status = 'rate_limited' OR http_status = 429) AS rl,
                     countIf(http_status >= 500) AS se, countIf(status = 'timeout') AS tm,
                     countIf(status = 'invalid_output') AS io
              FROM (SELECT {_FAST_SUBJECTS} AS subject, provider, status, http_status, attempt, ts
                    FROM {source} WHERE {where})
              WHERE NOT endsWith(subject, '=') GROUP BY subject, provider, minute) AS minutes
        LEFT JOIN (SELECT ifNull(provider, '') AS provider, toStartOfMinute(ts) AS minute, countIf({counted}) AS all_n,
                          countIf({counted} AND status != 'ok') AS all_f
                   FROM {source} WHERE {where} GROUP BY provider, minute) AS totals USING (provider, minute)
        GROUP BY subject, provider
        SETTINGS output_format_arrow_string_as_string = 1""",
        {"a": sql_time(start), "b": sql_time(end), "l": sql_time(latest or start),
         "mark": baseline.PAIR_MARK})


def feature_windows(querier: TextQuerier, *, start: datetime, end: datetime, guard: datetime | None = None,
                    marks: Mapping[str, datetime] | None = None
                    ) -> dict[tuple[str, str], tuple[float, float, Decimal, float, float, float]]:
    """(``feature=…``, provider) -> (attempts, failed attempts, USD of the billed failed ones) in ``[start, end)``,
    (attempts, failed attempts) in ``[guard, end)`` (0 without ``guard``), and what the other features failed at on
    the provider in the periods of the feature's attempts in ``[start, end)`` (each period's ratio weighted by the
    feature's attempts in it, as :func:`fast_window`'s ``others`` by minute): from ``feature_failures``, whose
    five-minute periods are the slow window's cross-section. A scheduled job that sends its burst through a provider
    blip's minutes is held to the blip's ratio there, not to the two hours' average (session s16's control alerts).
    ``marks``: the pass's watermarks (:func:`pass_marks`), else computed here."""
    windows = [Window(start, end)] + ([Window(guard, end)] if guard is not None else [])
    periods, params = windowed(shapes.FEATURE_FAILURES, windows, ["attempts", "failed_attempts", "failed_cost_usd"],
                               name="s", marks=marks, by_period=True)
    rows = query_result(querier, f"""
        SELECT concat('feature=', feature), provider, sumIf(a, w = 0), sumIf(f, w = 0), ifNull(sumIf(usd, w = 0), 0),
               sumIf(a, w = 1), sumIf(f, w = 1),
               if(sumIf(a, w = 0) > 0, sumIf(a * if(all_a > a, greatest(all_f - f, 0) / (all_a - a), 0), w = 0)
                                       / sumIf(a, w = 0), 0)
        FROM (SELECT *, sum(a) OVER (PARTITION BY w, period, provider) AS all_a,
                     sum(f) OVER (PARTITION BY w, period, provider) AS all_f
              FROM (SELECT w, period, feature, ifNull(provider, '') AS provider, toFloat64(sum(attempts)) AS a,
                           toFloat64(sum(failed_attempts)) AS f, sum(failed_cost_usd) AS usd
                    FROM {periods} GROUP BY w, period, feature, provider))
        GROUP BY feature, provider""", params).rows
    return {(s, p): (a, f, Decimal(usd), ga, gf, o) for s, p, a, f, usd, ga, gf, o in rows}


def customer_windows(querier: TextQuerier, *, start: datetime, end: datetime, customers: Collection[str],
                     marks: Mapping[str, datetime] | None = None
                     ) -> dict[tuple[str, str], tuple[float, float, Decimal]]:
    """(``customer=…``, provider) -> (attempts, failed attempts, USD of the billed failed ones) in ``[start, end)``
    for the ``customers`` named: whole hours from ``customer_provider_hours`` (sorted by customer: their rows,
    not every customer's of the hour), the partial hours at the edges and anything past its watermark from raw
    (:func:`~spendstream.detect.windows.windowed`). Two hours hold one whole hour at most times of the hour, so
    raw is read for about half of them."""
    if not customers:
        return {}
    periods, params = windowed(rollups.CUSTOMER_PROVIDER_HOURS, [Window(start, end)],
                               ["attempts", "failed_attempts", "failed_cost_usd"], name="c",
                               where="customer IN {c:Array(String)}", marks=marks)
    rows = query_result(querier, f"""
        SELECT concat('customer=', customer), ifNull(provider, ''), toFloat64(sum(attempts)),
               toFloat64(sum(failed_attempts)), ifNull(sum(failed_cost_usd), 0)
        FROM {periods} GROUP BY customer, provider""", params | {"c": sql_strings(customers)}).rows
    return {(s, p): (a, f, Decimal(usd)) for s, p, a, f, usd in rows}


def pair_windows(querier: TextQuerier, *, start: datetime, end: datetime, pairs: Collection[str],
                 marks: Mapping[str, datetime] | None = None) -> dict[str, tuple[float, float, Decimal]]:
    """``feature=…,customer=…`` -> (attempts, failed attempts, USD of the billed failed ones) in ``[start, end)``
    for the ``pairs`` named, from ``customer_hours`` (it keeps feature and customer) and raw at its edges, as
    :func:`customer_windows`. No verdict reads a pair's slow window: the pass reads it only for the message of a
    pair that fires, so that the message states the pair's two hours, not zeros."""
    if not pairs:
        return {}
    periods, params = windowed(rollups.CUSTOMER_HOURS, [Window(start, end)],
                               ["attempts", "failed_attempts", "failed_cost_usd"], name="p",
                               where=f"{baseline.PAIR_SQL} IN {{p:Array(String)}}", marks=marks)
    rows = query_result(querier, f"""
        SELECT concat('feature=', feature, ',customer=', customer), toFloat64(sum(attempts)),
               toFloat64(sum(failed_attempts)), ifNull(sum(failed_cost_usd), 0)
        FROM {periods} GROUP BY feature, customer""", params | {"p": sql_strings(pairs)}).rows
    return {s: (a, f, Decimal(usd)) for s, a, f, usd in rows}


def storm_free_windows(querier: TextQuerier, *, end: datetime, starts: Mapping[str, datetime],
                       marks: Mapping[str, datetime] | None = None) -> tuple[dict[tuple[str, str], _Counts],
                                                                             dict[tuple[datetime, str], _Counts]]:
    """A subject's slow window from the end of its last storm already paged (:func:`~spendstream.detect.storm.settled`),
    for the features and customers of ``starts`` (``feature=…``, ``customer=…`` -> that end): (subject, provider) ->
    (attempts, failed attempts) in ``[starts[subject], end)``, and (start, provider) -> the same summed over every
    feature (the providers' totals the subjects from that start are compared with, as ``RetryStormRule.judge``'s
    ``counted``). Read as :func:`feature_windows` and :func:`customer_windows` read the whole slow window
    (``feature_failures``, ``customer_provider_hours``, raw at the edges), one window per distinct start, in one
    statement; a provider with nothing since is absent."""
    if not starts:
        return {}, {}
    every = sorted(set(starts.values()))
    periods, params = windowed(shapes.FEATURE_FAILURES, [Window(at, end) for at in every],
                               ["attempts", "failed_attempts"], name="at", marks=marks)
    parts, times = [f"SELECT '' AS key, w, '' AS subject, ifNull(provider, '') AS provider, toFloat64(sum(attempts)) "
                    f"AS a, toFloat64(sum(failed_attempts)) AS f FROM {periods} GROUP BY w, provider"], {"": every}
    for key, rollup, name in (("feature", shapes.FEATURE_FAILURES, "af"),
                              ("customer", rollups.CUSTOMER_PROVIDER_HOURS, "ac")):
        named = {s.removeprefix(f"{key}="): at for s, at in starts.items()
                 if s.startswith(f"{key}=") and not _is_pair(s)}
        if not named:
            continue
        times[key] = sorted(set(named.values()))
        periods, used = windowed(rollup, [Window(at, end) for at in times[key]], ["attempts", "failed_attempts"],
                                 name=name, where=f"{key} IN {{{name}_in:Array(String)}}", marks=marks)
        params |= used | {f"{name}_in": sql_strings(sorted(named))}
        parts.append(f"SELECT '{key}' AS key, w, concat('{key}=', {key}) AS subject, ifNull(provider, '') AS provider, "
                     f"toFloat64(sum(attempts)) AS a, toFloat64(sum(failed_attempts)) AS f "
                     f"FROM {periods} GROUP BY w, {key}, provider")
    rows = query_result(querier, " UNION ALL ".join(parts), params).rows
    return ({(s, p): (a, f) for key, w, s, p, a, f in rows if key and times[key][w] == starts[s]},
            {(every[w], p): (a, f) for key, w, _, p, a, f in rows if not key})


def repeated_shapes(querier: TextQuerier, *, start: datetime, end: datetime, subject: str = _SUBJECTS,
                    keys: str = "1", params: Mapping[str, str] | None = None, raw: RawWindow | None = None
                    ) -> dict[str, tuple[float, float]]:
    """Per subject: (the most distinct requests of one fingerprinted shape, USD of the repeats beyond each
    shape's first). ``subject``: the subjects an event counts for (SQL); ``keys``: a condition on the events'
    feature and customer, with its ``params``; ``raw``: the round's copy of raw
    (:mod:`~spendstream.detect.raw_window`)."""
    rows = query_result(querier, f"""
        SELECT subject, max(n), sum(repeated) FROM (
            SELECT {subject} AS subject, n, repeated FROM (
                SELECT feature, customer, toFloat64(uniqExact(ifNull(request_id, event_id))) AS n,
                       toFloat64(sum(ifNull(total_cost, 0))) * (n - 1) / n AS repeated
                FROM {raw_window.source(raw, start=start, end=end)}
                WHERE ts >= {{a:DateTime64(3, 'UTC')}} AND ts < {{b:DateTime64(3, 'UTC')}} AND attempt = 1
                      AND prefix_fingerprint IS NOT NULL AND prefix_fingerprint != '' AND {keys}
                GROUP BY feature, customer, prefix_fingerprint, model, input_tokens
                HAVING n >= 2))
        WHERE NOT endsWith(subject, '=') GROUP BY subject""",
                        {"a": sql_time(start), "b": sql_time(end)} | dict(params or {})).rows
    return {s: (float(n), float(usd)) for s, n, usd in rows}


def slow_loops(querier: TextQuerier, *, now: datetime, slow: timedelta, marks: Mapping[str, datetime] | None = None,
               subject: str = _SUBJECTS, keys: str = "1", params: Mapping[str, str] | None = None
               ) -> dict[str, tuple[float, float]]:
    """Per subject: (the most distinct requests of one fingerprinted shape that repeated within ten minutes, summed
    over the ten-minute periods from ``slow`` before ``now``'s through ``now``; USD of the repeats beyond the first).

    From ``loop_shapes`` (the shapes a period repeated; :mod:`spendstream.sinks.shapes`) before its
    watermark and raw after: whole periods, so the same answer as raw's, in rows that only loops make."""
    rollup = shapes.LOOP_SHAPES
    start = _floor(now, rollup.step) - slow
    bounds = "{t} >= {a:DateTime64(3, 'UTC')} AND {t} < {b:DateTime64(3, 'UTC')} AND " + keys
    rows = query_result(querier, f"""
        SELECT subject, max(n), sum(repeated) FROM (
            SELECT {subject} AS subject, n, repeated FROM (
                SELECT feature, customer, toFloat64(sum(requests)) AS n,
                       toFloat64(ifNull(sum(cost_usd), 0)) * (n - 1) / n AS repeated
                FROM {rollups.columns(rollup, "{t}", ["requests", "cost_usd"], where_rollup=bounds,
                                      where_raw=bounds.replace("{t}", "ts"), marks=marks)}
                GROUP BY feature, customer, model, prefix_fingerprint, input_tokens))
        WHERE NOT endsWith(subject, '=') GROUP BY subject""",
                        {"a": sql_time(start), "b": sql_time(now)} | dict(params or {})).rows
    return {s: (float(n), float(usd)) for s, n, usd in rows}


def pair_loops(querier: TextQuerier, *, start: datetime, end: datetime, slow: timedelta, features: Collection[str],
               customers: Collection[str], marks: Mapping[str, datetime] | None = None, raw: RawWindow | None = None
               ) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """For the feature x customer pairs of ``features`` x ``customers`` (``feature=…``, ``customer=…``): what
    :func:`repeated_shapes` (``[start, end)``) and :func:`slow_loops` (``slow`` before ``end``) say of each pair.

    Read only for the features and customers that loop: a shape is its feature's, its customer's and its
    pair's, so the pair whose shape makes both loop loops too, and the three are one incident
    (:mod:`spendstream.detect.correlate`), not a page for the feature and another for the customer."""
    f = [s.removeprefix("feature=") for s in features]
    c = [s.removeprefix("customer=") for s in customers]
    if not f or not c:
        return {}, {}
    keys = "feature IN {f:Array(String)} AND customer IN {c:Array(String)}"
    named = {"f": sql_strings(f), "c": sql_strings(c)}
    return (repeated_shapes(querier, start=start, end=end, subject=baseline.PAIR_SQL, keys=keys, params=named,
                            raw=raw),
            slow_loops(querier, now=end, slow=slow, marks=marks, subject=baseline.PAIR_SQL, keys=keys, params=named))


def _floor(at: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=at.tzinfo)
    return at - (at - epoch) % step


def recent_failures(store: Store, *, now: datetime, window: timedelta, slow: timedelta,
                    guard: timedelta | None = None,
                    customers: Callable[[list[dict]], Collection[str]] = lambda fast: ()) -> list[dict]:
    """Per subject and provider: the fast window's and the slow window's attempts and failures, and the rest.

    ``customers`` chooses, from the fast window's rows, the customers (``customer=…`` subjects)
    whose slow window is read; every other customer's slow counts are 0. A feature's ``guard``
    window (the last ``guard``) is read with its slow one; a customer's is its fast window."""
    fast = fast_window(store, start=now - window, end=now)
    features = feature_windows(store, start=now - slow, end=now, guard=now - guard if guard else None)
    chosen = [s.removeprefix("customer=") for s in customers(fast) if s.startswith("customer=")]
    return merged(fast, features, customer_windows(store, start=now - slow, end=now, customers=chosen))


def merged(fast: list[dict], features: dict[tuple[str, str], tuple],
           customers: dict[tuple[str, str], tuple]) -> list[dict]:
    """The fast window's rows with their slow (and guard) windows' counts, and rows for what failed only earlier.

    ``slow_*``/``failed_cost``: the slow window; ``now_*``: the window a burn must still fail in (a feature's
    guard window, anyone else's fast window); ``judged_*``: the slow window a verdict reads (here the slow window:
    the pass shortens it for a subject after a storm, :func:`storm_free_windows`); ``slow_others``: a feature's
    others by period over the slow window (:func:`feature_windows`), None for anyone else."""
    slow_of, out = {**features, **customers}, []

    def row(r: dict, slow: tuple) -> dict:
        sa, sf, usd, *guarded = slow
        ga, gf, slow_others = guarded if guarded else (r["attempts"], r["failed"], None)
        return {**r, "slow_attempts": sa, "slow_failed": sf, "failed_cost": usd, "now_attempts": ga, "now_failed": gf,
                "judged_attempts": sa, "judged_failed": sf, "slow_others": slow_others}

    for r in fast:
        out.append(row(r, slow_of.pop((r["subject"], r["provider"]), (0.0, 0.0, Decimal(0)))))
    return out + [row({"subject": s, "provider": p, "attempts": 0.0, "failed": 0.0, "max_attempt": 0.0,
                       "others": 0.0, "latest_attempts": 0.0, "latest_failed": 0.0, **dict.fromkeys(_MIX, 0)}, slow)
                  for (s, p), slow in slow_of.items()]


def _is_pair(subject: str) -> bool:
    return baseline.PAIR_MARK in subject


def _candidates(rule: RetryStormRule, fast: pa.Table, loops: dict[str, tuple[float, float]],
                slowly: dict[str, tuple[float, float]], *, keep: Collection[str]) -> tuple[list[dict], dict, dict]:
    """The fast window's rows (:func:`fast_rows`) and the loops without the customers that cannot be hot
    (:meth:`RetryStormRule.can_fire`) and the pairs that can neither storm (:meth:`RetryStormRule.can_storm`: a
    pair's verdict is the fast window's storm, or a loop: one request's attempts here, a shape's repeats in
    ``keep``) nor loop on one request, and have no open incident (``keep``): most customers and pairs of a busy
    store, which no verdict would read.

    Chosen in Arrow, and only the rows kept become Python rows: at 50M events ten busy minutes hold ~29k subject
    rows of which ~600 are kept; building every row and testing it in Python cost ~55 ms of CPU a pass there (5M:
    ~7 ms), growing with the window's events, where this costs ~7 ms."""
    if not fast.num_rows:
        fast = pa.table({"subject": pa.array([], pa.string()), "failed": pa.array([], pa.float64()),
                         "max_attempt": pa.array([], pa.float64())})
    subjects = pc.dictionary_encode(fast["subject"].combine_chunks().cast(pa.string()))
    row_of = subjects.indices.to_numpy(zero_copy_only=False).astype(np.int64)  # each row's subject
    seen = subjects.dictionary
    failed = np.bincount(row_of, weights=_numbers(fast["failed"]), minlength=len(seen))
    longest = np.zeros(len(seen))
    np.maximum.at(longest, row_of, _numbers(fast["max_attempt"]))
    # a customer only a loop names (no attempt in the fast window) is judged on its repeats alone
    looped = pa.array(sorted(s for s in {*loops, *slowly} if s.startswith("customer=")), pa.string())
    looped = looped.filter(pc.invert(pc.is_in(looped, value_set=seen)))
    names = pa.concat_arrays([seen, looped])
    failed, longest = (np.concatenate([values, np.zeros(len(looped))]) for values in (failed, longest))
    pair = _flags(pc.match_substring(names, baseline.PAIR_MARK))
    customer = _flags(pc.starts_with(names, "customer="))
    held = _flags(pc.is_in(names, value_set=_strings(keep)))
    fires = rule.can_fire(failed=failed, max_attempt=longest, repeats=_lookup(names, loops),
                          slow_repeats=_lookup(names, slowly))
    out = ~held & ((pair & ~rule.can_storm(failed) & ~(longest >= rule.loop_attempts)) | (customer & ~fires))
    rows = fast.filter(pa.array(~out[:len(seen)][row_of])).to_pylist()
    named = sorted({*loops, *slowly})
    gone = {s for s, d in zip(named, _flags(pc.is_in(_strings(named), value_set=names.filter(pa.array(out)))),
                              strict=True) if d}
    return (rows, {s: v for s, v in loops.items() if s not in gone},
            {s: v for s, v in slowly.items() if s not in gone})


def _strings(values: Collection[str]) -> pa.Array:
    return pa.array(sorted(values), pa.string())


def _flags(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _numbers(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """As floats, a null (no value) as 0, as the rows' ``max_attempt or 0``."""
    return np.asarray(pc.fill_null(values.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False), dtype=float)


def _lookup(names: pa.Array, counts: Mapping[str, tuple[float, float]]) -> np.ndarray:
    """Per name, the first of its ``counts`` (0 where it has none)."""
    keys = list(counts)
    values = np.array([counts[k][0] for k in keys] + [0.0])
    at = pc.fill_null(pc.index_in(names, value_set=pa.array(keys, pa.string())), len(keys))
    return values[at.to_numpy(zero_copy_only=False)]


def _loop_pairs(querier: TextQuerier, rule: RetryStormRule, *, now: datetime, loops: Mapping[str, tuple[float, float]],
                slowly: Mapping[str, tuple[float, float]], marks: Mapping[str, datetime] | None,
                raw: RawWindow | None = None) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """The feature x customer pairs that loop on a request shape (:func:`pair_loops`: read only when a feature and
    a customer loop on one), as ``loops`` and ``slowly`` count a subject's repeats."""
    names = sorted(set(loops) | set(slowly))

    def shaped(fast: Mapping, slow: Mapping, subjects: list[str]) -> list[str]:
        looping = rule.looping(np.zeros(len(subjects)), np.array([fast.get(s, (0.0, 0.0))[0] for s in subjects]),
                               np.array([slow.get(s, (0.0, 0.0))[0] for s in subjects]))
        return [s for s, loop in zip(subjects, looping, strict=True) if loop]

    looping = shaped(loops, slowly, names)
    fast, slow = pair_loops(querier, start=now - timedelta(minutes=rule.window_minutes), end=now,
                            slow=timedelta(minutes=rule.slow_minutes), marks=marks, raw=raw,
                            features=[s for s in looping if s.startswith("feature=") and not _is_pair(s)],
                            customers=[s for s in looping if s.startswith("customer=")])
    pairs = shaped(fast, slow, sorted(set(fast) | set(slow)))
    return {s: fast.get(s, (0.0, 0.0)) for s in pairs}, {s: slow[s] for s in pairs if s in slow}


def detect_retry_storms(store: Store, now: datetime, *, rule: RetryStormRule | None = None,
                        hysteresis: Hysteresis | None = None, marks: Mapping[str, datetime] | None = None,
                        hour: datetime | None = None, raw: RawWindow | None = None) -> list[Alert]:
    """Alerts to store now (storms firing or resolved); the incidents' state is saved. ``marks``: the pass's
    watermarks (:func:`~spendstream.detect.pass_marks.pass_marks`: computed once for budgets and storms), else
    computed here (:func:`pass_marks`); ``hour``: the hour whose baselines the round uses
    (:func:`~spendstream.detect.baseline.newest_hour`, found once for storms and spend), else found here; ``raw``: the
    round's copy of the fast window's raw events (:func:`~spendstream.detect.raw_window.read`), else raw is read."""
    rule, hysteresis = rule or RetryStormRule(), hysteresis or HYSTERESIS
    window, slow = timedelta(minutes=rule.window_minutes), timedelta(minutes=rule.slow_minutes)
    marks = pass_marks(store) if marks is None else marks
    loops = repeated_shapes(store, start=now - window, end=now, raw=raw)
    slowly = slow_loops(store, now=now, slow=slow, marks=marks)
    loops |= {s: (0.0, 0.0) for s in slowly if s not in loops}
    fast = fast_rows(store, start=now - window, end=now, raw=raw,  # as Arrow: most rows are left out (_candidates)
                     latest=now - timedelta(minutes=rule.storm_now_minutes))
    guard = timedelta(minutes=rule.burn_now_minutes or rule.window_minutes)
    features = feature_windows(store, start=now - slow, end=now, guard=now - guard, marks=marks)
    incidents, marked = state.load(store, [KIND], marks={STORMED: now - slow})
    stormed = {subject: at for (_, subject), at in marked.items()}  # the end of its last paged storm, if recent
    paired, paired_slowly = _loop_pairs(store, rule, now=now, loops=loops, slowly=slowly, marks=marks, raw=raw)
    loops |= paired
    slowly |= paired_slowly
    fast, loops, slowly = _candidates(rule, fast, loops, slowly, keep={s for _, s in incidents} | set(paired))
    known = baseline.load(store, now, subjects={r["subject"] for r in fast} | set(loops) | {s for _, s in incidents},
                          hour=hour)
    own_of = dict(zip(known.subjects, known.fail_ratio, strict=True))
    history_of = dict(zip(known.subjects, known.history_hours, strict=True))

    def arrays(rows: list[dict]) -> tuple:
        subjects = sorted({r["subject"] for r in rows} | set(loops) | {s for _, s in incidents})
        providers = sorted({r["provider"] for r in rows})
        si, pi = {s: i for i, s in enumerate(subjects)}, {p: i for i, p in enumerate(providers)}
        a, f, sa, sf, na, nf, o, la, lf = (np.zeros((len(subjects), max(len(providers), 1))) for _ in range(9))
        so = np.full((len(subjects), max(len(providers), 1)), np.nan)
        longest = np.zeros(len(subjects))
        for r in rows:
            i, p = si[r["subject"]], pi[r["provider"]]
            a[i, p], f[i, p], sa[i, p], sf[i, p] = r["attempts"], r["failed"], r["judged_attempts"], r["judged_failed"]
            o[i, p] = r["others"] or 0.0
            la[i, p], lf[i, p] = r["latest_attempts"], r["latest_failed"]
            so[i, p] = np.nan if r["slow_others"] is None else r["slow_others"]
            na[i, p], nf[i, p] = r["now_attempts"], r["now_failed"]
            longest[i] = max(longest[i], r["max_attempt"] or 0)
        own = np.array([own_of.get(s, 0.0) for s in subjects])
        repeats = np.array([loops.get(s, (0.0, 0.0))[0] for s in subjects])
        slow_repeats = np.array([slowly.get(s, (0.0, 0.0))[0] for s in subjects])
        # the minutes' cross-section stands for the window's average in the fast window, and in the window a burn
        # must still fail in where that is the fast window (a feature's longer guard is read without minutes)
        others = {"others": o, "now_others": o if rule.burn_now_minutes is None else None}
        latest = {"latest_attempts": la, "latest_failed": lf}  # a storm's newest minutes (judge only)
        return (subjects, si, a, f, sa, sf, na, nf, longest, own, repeats, slow_repeats,
                np.array([s.startswith("feature=") and not _is_pair(s) for s in subjects], dtype=bool), others, latest,
                so)

    # the customers whose slow window can decide (a burn still failing now, or an open incident's resolve:
    # :func:`~spendstream.detect.storm.settled`) or be stated (a loop): read theirs
    subjects, _, a, f, _, _, na, nf, longest, own, repeats, slow_repeats, counted, others, _, _ = arrays(
        merged(fast, features, {}))
    decisive = rule.slow_matters(failed=f, attempts=a, own_ratio=own, counted=counted, max_attempt=longest,
                                 repeats=repeats, slow_repeats=slow_repeats, now_failed=nf, now_attempts=na, **others)
    customers = [s.removeprefix("customer=") for s, d in zip(subjects, decisive, strict=True)
                 if (d or (KIND, s) in incidents) and s.startswith("customer=")]
    rows = merged(fast, features, customer_windows(store, start=now - slow, end=now, customers=customers,
                                                   marks=marks))
    # a subject whose storm was paged is judged on its slow window from the storm's end (storm.settled): the storm's
    # failed attempts neither hold its incident nor re-open it as a burn (a customer's only where it was read)
    read = {f"customer={c}" for c in customers}
    starts = {s: at for s, at in stormed.items() if (s.startswith("feature=") and not _is_pair(s)) or s in read}
    since, totals = storm_free_windows(store, end=now, starts=starts, marks=marks)
    for r in rows:
        if r["subject"] in starts:
            r["judged_attempts"], r["judged_failed"] = since.get((r["subject"], r["provider"]), (0.0, 0.0))
    (subjects, si, a, f, sa, sf, na, nf, longest, own, repeats, slow_repeats, counted, others, latest,
     by_period) = arrays(rows)
    wasted, two_hours = np.zeros(len(subjects)), np.zeros((len(subjects), 2))  # the slow window, as stated
    mix: dict[str, list[int]] = {s: [0, 0, 0, 0] for s in subjects}
    for r in rows:
        wasted[si[r["subject"]]] += float(r["failed_cost"])
        two_hours[si[r["subject"]]] += (r["slow_failed"], r["slow_attempts"])
        mix[r["subject"]] = [m + int(r[k]) for m, k in zip(mix[r["subject"]], _MIX, strict=True)]
    repeated_usd = np.array([max(loops.get(s, (0.0, 0.0))[1], slowly.get(s, (0.0, 0.0))[1]) for s in subjects])
    # each subject's slow window is compared with the features' totals over the same minutes: the two hours', or
    # those since its storm (a provider blip after the storm weighs as much in both)
    providers = sorted({r["provider"] for r in rows})
    total_a, total_f = np.zeros_like(sa), np.zeros_like(sf)
    for (_, provider), (fa, ff, *_) in features.items():
        total_a[:, providers.index(provider)] += fa
        total_f[:, providers.index(provider)] += ff
    for subject, at in starts.items():
        for k, provider in enumerate(providers if subject in si else ()):
            total_a[si[subject], k], total_f[si[subject], k] = totals.get((at, provider), (0.0, 0.0))
    # a feature's slow window is held, per provider, to what the other features failed at in the periods of its
    # attempts (a scheduled burst sent through a provider blip: the blip's ratio, not the two hours' average); a
    # customer has only hours (the average), a subject judged since its storm the average since then
    slow_others = others_ratio(total_f, total_a, failed=sf, attempts=sa)
    by_period[[s in starts for s in subjects]] = np.nan
    slow_others = np.where(np.isnan(by_period), slow_others, by_period)
    verdict = rule.judge(failed=f, attempts=a, own_ratio=own, slow_failed=sf, slow_attempts=sa, max_attempt=longest,
                         repeats=repeats, counted=counted, slow_repeats=slow_repeats, now_failed=nf, now_attempts=na,
                         slow_others=slow_others, **others, **latest)
    warm = np.array([history_of.get(s, 0) >= STORM_WARMUP_HOURS for s in subjects], dtype=bool)
    volume = rule.loop_volume(a.sum(axis=1), sa.sum(axis=1))  # as judge's loop test
    loop = rule.looping(longest, repeats, slow_repeats, **volume)
    hot, very_hot = verdict.hot & (warm | loop), verdict.very_hot & (warm | loop)
    # failures above the expected ratio, per fast window (a burn's slow window scaled to one): what correlating
    # the subjects of one storm compares (a pair's storm is most of its feature's and its customer's)
    ratio = verdict.expected_ratio
    excess = np.maximum(f.sum(axis=1) - ratio * a.sum(axis=1),
                        (sf.sum(axis=1) - ratio * sa.sum(axis=1)) * rule.window_minutes / rule.slow_minutes)
    # a loop on a request shape: its repeated requests, per fast window (a pair's shape is its feature's and its
    # customer's, so the pair whose shape loops explains both: one incident)
    shaped = rule.looping(np.zeros(len(subjects)), repeats, slow_repeats, **volume)
    excess = np.maximum(excess, np.where(shaped, np.maximum(repeats, slow_repeats * rule.window_minutes
                                                                  / rule.slow_minutes), 0.0))
    calm = settled(verdict)
    thin = a.sum(axis=1) < rule.min_failed  # too few attempts to show the storm is over: calm patiently
    steps: dict[str, Step] = {}
    for subject in subjects:
        i = si[subject]
        before = incidents.get((KIND, subject))
        if before is None and not hot[i]:
            continue
        after, transition = hysteresis.step(before, kind=KIND, subject=subject, hot=bool(hot[i]),
                                            very_hot=bool(very_hot[i]), calm=bool(calm[i]),
                                            onset=now - window, severity="error", observed=float(verdict.z[i]),
                                            wasted_usd=0.0, patient=bool(thin[i]))
        steps[subject] = Step(before, after, transition, float(excess[i]), bool(hot[i]))
    # one storm, one page: its pair, feature and customer are one incident, and so is a second pair on a feature
    # the storm's page still carries
    steps = correlate(steps, {}, follow_parts=True)
    # a pair's verdict is its fast window's; its two hours are read only to be stated, for the pairs that fire
    pairs_slow = pair_windows(store, start=now - slow, end=now, marks=marks, pairs=[
        s for s, step in steps.items() if _is_pair(s) and step.transition == "firing"])
    alerts, changes = [], []
    hours = rule.slow_minutes // 60
    for subject, step in steps.items():
        changes.append(((KIND, subject), step.before, step.after))
        if step.transition is not None:
            i = si[subject]
            incident = step.after if step.transition == "firing" else step.before
            failed, attempts = f[i].sum(), a[i].sum()
            rl, server, timeouts, invalid = mix[subject]
            now_text = (f"{int(failed)} failed of {int(attempts)} attempts in the last {rule.window_minutes} min "
                        f"({failed / max(attempts, 1):.0%}, expected {verdict.expected_ratio[i]:.1%}); ")
            errors = (f"{rl} rate-limited (429), {server} server errors (5xx), {timeouts} timeouts, {invalid} "
                      "invalid outputs; ")
            if step.transition == "resolved":
                text = (f"failures back to {failed / max(attempts, 1):.0%} (expected {verdict.expected_ratio[i]:.1%}) "
                        f"in the last {rule.window_minutes} min, no loop")
            elif _is_pair(subject):
                pa, pf, pusd = pairs_slow.get(subject, (0.0, 0.0, Decimal(0)))
                if loop[i]:  # its feature and customer loop on its request or its request shape
                    text = (f"{now_text}{int(pf)} failed of {int(pa)} in {hours} h; longest request {int(longest[i])} "
                            f"attempts; most repeated request shape {int(repeats[i])} requests "
                            f"({int(slow_repeats[i])} in {hours} h); {errors}"
                            f"${float(pusd) + repeated_usd[i]:.2f} wasted on failed attempts and repeated calls "
                            f"in {hours} h")
                else:
                    text = (f"{now_text}{int(pf)} failed of {int(pa)} in {hours} h; {errors}"
                            f"${float(pusd):.2f} wasted on failed attempts in {hours} h")
            else:
                usd = float(wasted[i] + repeated_usd[i])
                text = (f"{now_text}{int(two_hours[i, 0])} failed of {int(two_hours[i, 1])} in {hours} h; longest "
                        f"request {int(longest[i])} attempts; most repeated request shape {int(repeats[i])} requests "
                        f"({int(slow_repeats[i])} in {hours} h); {errors}"
                        f"${usd:.2f} wasted on failed attempts and repeated calls in {hours} h")
            if step.transition == "firing" and loop[i]:  # say what fired first: a loop may fail nothing at all
                text = f"agent loop (one request retried, or one request shape repeated): {text}"
            lifts = lifted(steps, incident.dedup_key) if step.transition == "firing" else []
            if lifts:
                text = f"{headline(subject, lifts)}: {text}; also lifts {and_list(lifts)}"
            alerts.append(Alert(kind=KIND, severity=incident.severity, state=step.transition, subject=subject,
                                window_start=incident.opened_at, window_end=now,
                                observed=Decimal(f"{failed / max(attempts, 1):.4f}"),
                                expected=Decimal(f"{verdict.expected_ratio[i]:.4f}"), dedup_key=incident.dedup_key,
                                message=text, created_at=now, correlated_with=incident.root or None))
    # where a storm already paged ends for now: its subject, and a pair's feature and customer (their windows hold
    # its failures); their slow windows start here until the next mark or for slow_minutes (storm.settled)
    ended = {s for s, step in steps.items()
             if step.after is not None and step.after.state == "firing" and verdict.stormed[si[s]]}
    ended |= {parent for s in ended if _is_pair(s) for parent in parents(s, {})}
    state.save(store, changes, now=now, marks=[(STORMED, s) for s in sorted(ended)])
    return alerts
