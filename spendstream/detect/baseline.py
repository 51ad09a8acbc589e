"""The detectors' memory: learned once an hour from the hour rollup, read by every pass for one hour.

A detection pass must cost what its windows read, not what history holds (issue 17), so
everything that looks over days or weeks happens here, at most once an hour (the first
pass after an hour closes does it; a later pass of that hour finds it done):

1. **peaks**: each closed hour's largest 10-minute spend per subject, from raw
   ``usage_events FINAL`` for that hour (and the 10 minutes before it), kept in
   ``detector_peaks`` (a first run computes the last ``PEAK_DAYS`` days, a day of raw per read);
2. **profiles**: four weeks of subject-hours ending ``LAG_HOURS`` ago, per team, feature, customer,
   feature × customer (the costliest ``PAIR_SUBJECTS``) and feature × customer × model where a pair is served by
   several models (the costliest ``MODEL_SUBJECTS``), learned by :func:`spendstream.detect.noise.learn`.
   Each closed hour's are computed once from ``usage_hours`` and ``customer_hours`` (exact: raw after the
   watermark) and again when marked (:mod:`spendstream.detect.subject_hours`), so a refresh reads stored
   numbers, not four weeks of request sets;
3. **schedules** longer than those four weeks (:mod:`spendstream.detect.schedules`): the same
   hours at the same place in the last months, so a month-end job is expected on its third month;
4. **the slow window**: the last 24 closed hours against that profile
   (:meth:`SpendAnomalyRule.slow`).

For the hour being evaluated, one row per subject goes to ``detector_baselines``: the
expected requests, dollars and 10-minute peak of this hour of the week, the dispersion,
the failure ratio, the history, the slow window's verdict and the last day's spend.
A pass reads only those rows (:func:`load`). The worker and ``notify`` run the refresh beside their passes
(:mod:`spendstream.alerting.refresher`): a pass uses the newest baselines up to ``STALE_HOURS`` old.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.detect import schedules
from spendstream.detect import subject_hours as stored_hours
from spendstream.detect.noise import HOURS_PER_WEEK, PEAK_DAYS, learn
from spendstream.detect.spend import SpendAnomalyRule
from spendstream.detect.subject_hours import (  # a feature × customer's name (retry_storm too), a leaf's
    MODEL_MARK,
    MODEL_SQL,
    PAIR_MARK,
    PAIR_SQL,
)
from spendstream.sinks.store import ArrowQuerier, Store, TextQuerier, query_result, sql_strings, sql_time

log = logging.getLogger(__name__)

LEARN_DAYS = 28
LAG_HOURS = 48        # the profile ends two days back: what creeps in now is not yet "usual"
CHUNK_SUBJECTS = 2000  # subjects learned at once: bounds the dense arrays (subjects × ~30 days of hours)
FAIL_HOURS = 7 * 24    # the failure ratio a storm is measured against: the last week, less its worst day
STALE_HOURS = 3        # a pass uses the newest baselines at most this old (a refresh that failed, a late leader)
_MONDAY = datetime(2024, 1, 1, tzinfo=timezone.utc)

# each kind of subject: a test every name of that kind passes (a name of another kind may pass it too), and the SQL
# that names an event's subject of that kind
SUBJECT_KINDS = ((lambda name: name.startswith("team="), "concat('team=', ifNull(team, ''))"),
                 (lambda name: name.startswith("feature="), "concat('feature=', ifNull(feature, ''))"),
                 (lambda name: name.startswith("customer="), "concat('customer=', ifNull(customer, ''))"),
                 (lambda name: PAIR_MARK in name, PAIR_SQL),
                 (lambda name: MODEL_MARK in name, MODEL_SQL))
SUBJECTS_SQL = f"arrayJoin([{', '.join(sql for _, sql in SUBJECT_KINDS)}])"
PAIR_SUBJECTS = 5000   # pairs kept per refresh, the costliest: what the refresh learns stays bounded at any scale
MODEL_SUBJECTS = 5000  # feature × customer × model kept per refresh, of pairs with several models, the costliest

# A pass's subjects: a leaf only where the baselines of hour {leaves_of} hold it (its pair has several models, it is
# among the MODEL_SUBJECTS costliest). A subject without a baseline gets no verdict, so dropping the others changes
# none; a pass groups its window by MODEL_SUBJECTS leaves at most, not by every model of every pair.
PASS_SUBJECTS_SQL = SUBJECTS_SQL.replace(MODEL_SQL, f"""if({MODEL_SQL} IN (
    SELECT subject FROM detector_baselines
    WHERE for_hour = {{leaves_of:DateTime('UTC')}} AND subject LIKE 'feature=%{MODEL_MARK}%'),
    {MODEL_SQL}, 'feature=,customer=,model=')""")
_NO_HOUR = datetime(1970, 1, 1, tzinfo=timezone.utc)


def subjects_sql(names: Collection[str]) -> str:
    """:data:`SUBJECTS_SQL` with only the kinds that can name one of ``names``: the same rows for those names, each
    event's other subjects not built (a pass that counts one hot customer's requests names no team, feature, pair
    or leaf of 57k events)."""
    kinds = [sql for can, sql in SUBJECT_KINDS if any(can(name) for name in names)]
    return f"arrayJoin([{', '.join(kinds)}])" if kinds else SUBJECTS_SQL  # (no kind names them: none is found)


def newest_hour(querier: TextQuerier, now: datetime) -> datetime | None:
    """The hour whose baselines a pass at ``now`` uses: the newest refreshed of the last ``STALE_HOURS`` (None: none).

    A probe of one row per hour (a refreshed hour has one at least): ``max(for_hour)`` over those hours read every
    row of them (143k at 525k events, most of what a pass read there)."""
    hours = [floor_hour(now) - timedelta(hours=k) for k in range(STALE_HOURS)]
    probes = " UNION ALL ".join(f"SELECT for_hour FROM (SELECT for_hour FROM detector_baselines "
                                f"WHERE for_hour = {{h{k}:DateTime('UTC')}} LIMIT 1)" for k in range(len(hours)))
    found = query_result(querier, f"SELECT toString(for_hour) FROM ({probes}) ORDER BY for_hour DESC LIMIT 1 "
                                  "SETTINGS max_block_size = 1",  # a granule per probe, not a block of them
                         {f"h{k}": f"{h:%Y-%m-%d %H:%M:%S}" for k, h in enumerate(hours)}).rows
    return datetime.fromisoformat(str(found[0][0])).replace(tzinfo=timezone.utc) if found else None


def leaves_params(hour: datetime | None) -> dict[str, object]:
    """The parameters of :data:`PASS_SUBJECTS_SQL` for the baselines of ``hour`` (None: no leaf)."""
    return {"leaves_of": f"{hour or _NO_HOUR:%Y-%m-%d %H:%M:%S}"}


def hour_of_week(at: datetime) -> int:
    return int((at - _MONDAY).total_seconds() // 3600) % HOURS_PER_WEEK


def floor_hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Baselines:
    """What a pass knows about every subject in this hour, as arrays aligned with ``subjects``."""

    subjects: list[str]
    requests: np.ndarray       # expected per hour
    cost: np.ndarray           # expected USD per hour
    peak_cost: np.ndarray      # typical largest 10-minute spend
    dispersion: np.ndarray
    fail_ratio: np.ndarray
    history_hours: np.ndarray
    slow_hot: np.ndarray
    slow_calm: np.ndarray
    slow_excess_usd: np.ndarray
    day_cost: np.ndarray       # USD over the last 24 closed hours
    price_hours: np.ndarray    # the last closed hours in a row at a new price (SpendAnomalyRule.price_shift; 0: none)
    usual_per_request: np.ndarray  # USD per request over those hours, as usual ...
    per_request: np.ndarray        # ... and as observed
    price_excess_usd: np.ndarray   # USD above what those hours' requests usually cost
    median_hot: np.ndarray     # the slow window hot by its median alone (slow_hot: or by the price test) ...
    median_calm: np.ndarray    # ... and calm by it (slow_calm: and by the price test)


def _subject_hours_sql() -> str:
    return stored_hours.by_subject_sql("toUInt32(dateDiff('hour', {a:DateTime64(3, 'UTC')}, period))", as_float=True)


def subject_hours(querier: TextQuerier, *, start: datetime, end: datetime) -> list[tuple]:
    """(subject, hour index from ``start``, requests, attempts, failed attempts, USD) for every subject-hour with
    usage in ``[start, end)`` (whole hours), from ``usage_hours`` (``customer_hours`` for customers) before
    their watermarks and raw after: the same numbers as raw ``FINAL``."""
    return query_result(querier, _subject_hours_sql(), {"a": sql_time(start), "b": sql_time(end)}).rows


def hourly_peaks(querier: TextQuerier, *, start: datetime, end: datetime) -> list[tuple]:
    """(subject, hour, largest spend in 10 minutes ending in that hour) for the whole hours in ``[start, end)``."""
    return query_result(querier, f"""
        SELECT subject, toString(toStartOfHour(m)) AS hour, max(rolling) FROM (
            SELECT subject, m, sum(c) OVER (PARTITION BY subject ORDER BY toUInt32(m)
                                            RANGE BETWEEN 540 PRECEDING AND CURRENT ROW) AS rolling
            FROM (SELECT {SUBJECTS_SQL} AS subject, toStartOfMinute(ts) AS m,
                         toFloat64(sumIf(ifNull(total_cost, 0), priced)) AS c
                  FROM usage_events FINAL
                  WHERE ts >= {{a:DateTime64(3, 'UTC')}} - INTERVAL 10 MINUTE AND ts < {{b:DateTime64(3, 'UTC')}}
                  GROUP BY subject, m)
            WHERE NOT endsWith(subject, '='))
        WHERE m >= {{a:DateTime64(3, 'UTC')}}
        GROUP BY subject, hour""", {"a": sql_time(start), "b": sql_time(end)}).rows


def refresh(store: Store, now: datetime, *, rule: SpendAnomalyRule | None = None,
            reader: ArrowQuerier | None = None) -> int | None:
    """Learn this hour's baselines unless they exist; how many subjects were written (None: already done).

    ``reader`` takes the long reads (a second session beside the store's own, so that a refresh running
    beside the detection rounds does not hold the store they read); writes go to ``store``."""
    rule = rule or SpendAnomalyRule()
    reader = reader or store
    hour = floor_hour(now)
    params = {"h": sql_time(hour)}
    if query_result(store, "SELECT count() FROM detector_baselines WHERE for_hour = {h:DateTime64(3, 'UTC')}",
                    params).scalar():
        return None
    _store_peaks(store, hour, reader=reader)
    learn_end = hour - timedelta(hours=LAG_HOURS)
    learn_start = learn_end - timedelta(days=LEARN_DAYS)
    # each hour's subject-hours are computed once (and again when marked): this reads small stored rows;
    # Arrow, not JSON: a month of customer-hours is ~10^6 rows (value by value, 17 of 20 s at 3M events)
    spans = schedules.spans(hour)
    stored_hours.ensure(store, reader, [(learn_start, hour), *spans])
    hours = stored_hours.read(reader, start=learn_start, end=hour, pairs=PAIR_SUBJECTS, leaves=MODEL_SUBJECTS)
    peaks = reader.query_arrow("""
        SELECT subject, toUInt32(dateDiff('hour', {a:DateTime64(3, 'UTC')}, hour)) AS h, max(peak_cost) AS peak
        FROM detector_peaks
        WHERE hour >= {a:DateTime64(3, 'UTC')} AND hour < {b:DateTime64(3, 'UTC')} AND subject != ''
        GROUP BY subject, hour""", {"a": sql_time(learn_start), "b": sql_time(learn_end)})
    if not hours.num_rows:
        _insert(store, hour, [])  # a fresh store: an empty refresh, so the next pass does not redo it
        return 0
    hours = hours.filter(_costliest_pairs(hours))
    subjects, row_of = group_subjects(hours["subject"])
    hour_of = hours["h"].to_numpy().astype(np.int64)
    values = {name: hours[name].to_numpy() for name in ("requests", "attempts", "failed", "cost")}
    # Arrow's hash lookup: four weeks of peaks hold every pair's (~10^6 rows), whose strings a sorted search
    # converted and compared one by one (8 of 22 s of CPU at 5M events)
    if not peaks.num_rows:
        peaks = pa.table({"subject": pa.array([], pa.string()), "h": pa.array([], pa.uint32()),
                          "peak": pa.array([], pa.float64())})
    peak_subject = pc.fill_null(pc.index_in(peaks["subject"], value_set=pa.array(subjects, pa.string())), -1)
    peak_subject = peak_subject.to_numpy(zero_copy_only=False).astype(np.int64)
    known_peak = peak_subject >= 0
    peak_row, peak_hour = peak_subject[known_peak], peaks["h"].to_numpy().astype(np.int64)[known_peak]
    peak_value = peaks["peak"].to_numpy()[known_peak]
    learned = int((learn_end - learn_start).total_seconds() // 3600)
    total_hours = learned + LAG_HOURS
    memory = schedules.remember(lambda a, b: stored_hours.read(reader, start=a, end=b), hour, subjects)
    span = [hour_of_week(hour + timedelta(hours=k - schedules.BEFORE_HOURS)) for k in range(schedules.SPAN_HOURS)]
    out = []
    for chunk in range(0, len(subjects), CHUNK_SUBJECTS):
        names = [str(x) for x in subjects[chunk:chunk + CHUNK_SUBJECTS]]
        req, att, fail, cost, peak = (np.zeros((len(names), total_hours)) for _ in range(5))
        mine = (row_of >= chunk) & (row_of < chunk + len(names))
        at = (row_of[mine] - chunk, hour_of[mine])
        req[at], att[at], fail[at], cost[at] = (values[n][mine] for n in ("requests", "attempts", "failed", "cost"))
        theirs = (peak_row >= chunk) & (peak_row < chunk + len(names))
        peak[peak_row[theirs] - chunk, peak_hour[theirs]] = peak_value[theirs]
        used = np.zeros(peak.shape, dtype=bool)
        used[at] = True
        peak[~used] = 0.0  # a peak counts in the hours the subject has usage (a 10-minute window reaches back)
        seen = req[:, :learned] > 0
        first = np.where(seen.any(axis=1), seen.argmax(axis=1), learned)
        profiles = learn(requests=req[:, :learned], cost=cost[:, :learned], attempts=att[:, :learned],
                         failed=fail[:, :learned], peak_cost=peak[:, :learned],
                         first_hour_of_week=hour_of_week(learn_start), first_hour=first)
        # a day of the month that four weeks do not hold: what it promises, and the history it adds
        planned = schedules.schedule(memory.rows(slice(chunk, chunk + len(names))), profiles.cost[:, span],
                                     now=hour)
        # history runs to now for warm-up: a subject first seen after the profile's end is new
        seen_all = req > 0
        history = total_hours - np.where(seen_all.any(axis=1), seen_all.argmax(axis=1), total_hours)
        history = np.maximum(history, planned.history_hours)
        last = [hour_of_week(hour - timedelta(hours=k)) for k in range(24, 0, -1)]
        before = [hour_of_week(hour - timedelta(hours=k)) for k in range(48, 24, -1)]  # the day before: growth?
        slow = rule.slow(observed_usd=cost[:, -24:],
                         expected_usd=np.maximum(profiles.cost[:, last], planned.cost[:, :schedules.BEFORE_HOURS]),
                         expected_requests=profiles.requests[:, last], history_hours=history,
                         dispersion=profiles.dispersion, previous_usd=cost[:, -48:-24],
                         previous_expected_usd=profiles.cost[:, before],
                         previous_expected_requests=profiles.requests[:, before], observed_requests=req[:, -24:],
                         per_request=profiles.per_request[:, last[-rule.price_hours:]], price_cv2=profiles.price_cv2)
        # what a page on a new price says: since when, from what to what per request (the slow window's hours)
        shift = rule.price_shift(observed_usd=cost[:, -24:], observed_requests=req[:, -24:],
                                 per_request=profiles.per_request[:, last], price_cv2=profiles.price_cv2)
        w = hour_of_week(hour)
        expected_cost = np.maximum(profiles.cost[:, w], planned.cost[:, schedules.BEFORE_HOURS])
        # a remembered hour's dollars bound its 10-minute peak (the rollups keep no finer grain a month back);
        # one sighting is enough for that; a pair (and a leaf of one: PAIR_MARK is in its name) must beat its usual
        # busiest 10 minutes of a day as well
        pair = np.array([PAIR_MARK in name for name in names], dtype=bool)
        peak_cost = np.maximum(rule.peak(profiles.peak_cost[:, w], profiles.day_peak_in(w), pair=pair),
                               planned.peak[:, schedules.BEFORE_HOURS - 1:].max(axis=1))
        fail_ratio = usual_fail_ratio(att[:, -FAIL_HOURS:], fail[:, -FAIL_HOURS:])
        for i, name in enumerate(names):
            out.append((name, profiles.requests[i, w], expected_cost[i], peak_cost[i],
                        profiles.dispersion[i], fail_ratio[i], int(history[i]), int(slow.hot[i]),
                        int(slow.calm[i]), float(slow.excess_usd[i]), float(cost[i, -24:].sum()),
                        int(shift.hours[i]), float(shift.usual_per_request[i]), float(shift.per_request[i]),
                        float(shift.excess_usd[i]), int(slow.median_hot[i]), int(slow.median_calm[i])))
    _insert(store, hour, out)
    return len(out)


def group_subjects(names: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The distinct subjects, sorted, and each row's index among them.

    Arrow's hash table finds the distinct names (tens of thousands) in one pass over the rows
    (a month of customer-hours is ~10^6), and only those are sorted: numpy's ``unique`` sorted
    every row's string (``bench/refresh_grouping.py`` times both).
    """
    if isinstance(names, pa.ChunkedArray):
        # one array first: unifying per-chunk dictionaries grew with the chunks (a read of four weeks at 50M
        # arrives in thousands; 25 s of a refresh); large_string, as the rows' names may pass 2 GB
        names = names.cast(pa.large_string()).combine_chunks() if names.num_chunks else pa.array([], pa.string())
    encoded = pc.dictionary_encode(names)
    distinct = encoded.dictionary.to_numpy(zero_copy_only=False).astype(str)
    order = np.argsort(distinct, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return distinct[order], rank[encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)]


def _costliest_pairs(hours: pa.Table) -> np.ndarray:
    """Which rows to learn from: every team, feature and customer, the ``PAIR_SUBJECTS`` costliest pairs and the
    leaves the read kept (:func:`spendstream.detect.subject_hours.read` bounds them).

    Pairs number up to features × customers; the small ones are covered by their customer (a spike
    there is most of it) and by the dollar floor, so only the costliest are worth learning.
    """
    # in Arrow (hash grouping), not numpy's per-string sorts: a month of customer-hours is ~10^6 rows
    pair = pc.and_(pc.match_substring(hours["subject"], PAIR_MARK),
                   pc.invert(pc.match_substring(hours["subject"], MODEL_MARK)))
    if not pc.any(pair).as_py():
        return np.ones(hours.num_rows, dtype=bool)
    totals = hours.filter(pair).group_by("subject").aggregate([("cost", "sum")])
    if totals.num_rows > PAIR_SUBJECTS:
        # ties broken by name, so the same month always keeps the same pairs
        top = pc.sort_indices(totals, [("cost_sum", "descending"), ("subject", "ascending")])[:PAIR_SUBJECTS]
        kept = totals["subject"].take(top)
        return pc.or_(pc.invert(pair), pc.is_in(hours["subject"], value_set=kept)).to_numpy(zero_copy_only=False)
    return np.ones(hours.num_rows, dtype=bool)


def _store_peaks(store: Store, hour: datetime, *, reader: TextQuerier) -> None:
    """Compute the peaks of the closed hours of the last ``PEAK_DAYS`` not yet done (each done hour holds a row
    for subject ``''``, so an hour without traffic is not read again, and a clock going back is no trouble)."""
    start = hour - timedelta(days=PEAK_DAYS)
    done = {str(h) for (h,) in query_result(store, """
        SELECT DISTINCT toString(hour) FROM detector_peaks
        WHERE subject = '' AND hour >= {a:DateTime64(3, 'UTC')} AND hour < {b:DateTime64(3, 'UTC')}""",
                                            {"a": sql_time(start), "b": sql_time(hour)}).rows}
    missing = [start + timedelta(hours=k) for k in range(PEAK_DAYS * 24)]
    missing = [h for h in missing if f"{h:%Y-%m-%d %H:%M:%S}" not in done]
    runs: list[list[datetime]] = []
    for h in missing:  # consecutive hours, a day at most, one read of raw each
        if runs and h - runs[-1][-1] == timedelta(hours=1) and len(runs[-1]) < 24:
            runs[-1].append(h)
        else:
            runs.append([h])
    for run in runs:
        rows = hourly_peaks(reader, start=run[0], end=run[-1] + timedelta(hours=1))
        rows += [("", f"{h:%Y-%m-%d %H:%M:%S}", 0.0) for h in run]
        store.insert_arrow("detector_peaks", pa.table({
            "subject": pa.array([r[0] for r in rows], pa.string()),
            "hour": pa.array([datetime.fromisoformat(str(r[1])) for r in rows], pa.timestamp("s")),
            "peak_cost": pa.array([float(r[2]) for r in rows], pa.float64())}))


_BASELINE_COLUMNS = (("subject", pa.string()), ("requests", pa.float64()), ("cost", pa.float64()),
                     ("peak_cost", pa.float64()), ("dispersion", pa.float64()), ("fail_ratio", pa.float64()),
                     ("history_hours", pa.uint32()), ("slow_hot", pa.uint8()), ("slow_calm", pa.uint8()),
                     ("slow_excess_usd", pa.float64()), ("day_cost", pa.float64()), ("price_hours", pa.uint16()),
                     ("usual_per_request", pa.float64()), ("per_request", pa.float64()),
                     ("price_excess_usd", pa.float64()), ("median_hot", pa.uint8()), ("median_calm", pa.uint8()))


def _insert(store: Store, hour: datetime, rows: list[tuple]) -> None:
    """One Arrow insert of the hour's baselines (tens of thousands of customers: not SQL text)."""
    # the empty subject: "refreshed, nothing yet"
    rows = rows or [("", 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 1, 0.0, 0.0, 0, 0.0, 0.0, 0.0, 0, 1)]
    columns = {"for_hour": pa.array([hour.replace(tzinfo=None)] * len(rows), pa.timestamp("s"))}
    for i, (name, type_) in enumerate(_BASELINE_COLUMNS):
        columns[name] = pa.array([row[i] for row in rows], type_)
    store.insert_arrow("detector_baselines", pa.table(columns))


def usual_fail_ratio(attempts: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """How each subject fails lately, from its last week of hours (subjects × ``FAIL_HOURS``, oldest first): failed
    attempts per attempt over the week **less its worst day** (of its seven 24-hour spans, the one with the most
    failures), when it has attempts on another day.

    A storm is measured against how the subject fails lately, but not against itself: a quiet customer's 30
    minutes of failing retries would otherwise make its usual ratio 70 %, and the storm would read as usual
    within the hour, and so would the next one that week. A subject that always fails as much keeps its ratio
    (its other days fail as much); one with a single active day keeps that day's.
    """
    days_attempts = attempts.reshape(len(attempts), -1, 24).sum(axis=2)
    days_failed = failed.reshape(len(failed), -1, 24).sum(axis=2)
    worst = np.zeros_like(days_failed, dtype=bool)
    worst[np.arange(len(worst)), days_failed.argmax(axis=1)] = True
    other_days = ((days_attempts > 0) & ~worst).any(axis=1)
    keep = ~(worst & other_days[:, None])
    tried = np.where(keep, days_attempts, 0).sum(axis=1)
    return np.where(tried > 0, np.where(keep, days_failed, 0).sum(axis=1) / np.maximum(tried, 1), 0.0)


def load(querier: TextQuerier, now: datetime, *, subjects: Collection[str] | None = None,
         or_where: str = "0", hour: datetime | None = None) -> Baselines:
    """The newest baselines of this hour (or of the last ``STALE_HOURS``); empty when there are none. ``hour``: that
    hour, when the caller found it (:func:`newest_hour`).

    With ``subjects``, only theirs and those whose baseline matches ``or_where`` (SQL over the
    table's columns): a pass reads the subjects it can act on, not every customer ever seen
    (50,000 rows took 0.4–0.5 s of a pass at 3M events).
    """
    hour = hour or newest_hour(querier, now)
    if hour is None:
        return Baselines([], *(np.zeros(0) for _ in range(6)), np.zeros(0, bool), np.zeros(0, bool),
                         *(np.zeros(0) for _ in range(6)), np.zeros(0, bool), np.zeros(0, bool))
    params: dict[str, object] = {"h": f"{hour:%Y-%m-%d %H:%M:%S}"}
    which = "1"
    if subjects is not None:
        which = f"(subject IN (SELECT arrayJoin({{subjects:Array(String)}})) OR ({or_where}))"
        params["subjects"] = sql_strings(subjects)
    rows = query_result(querier, f"""
        SELECT subject, requests, cost, peak_cost, dispersion, fail_ratio, history_hours, slow_hot, slow_calm,
               slow_excess_usd, day_cost, price_hours, usual_per_request, per_request, price_excess_usd,
               median_hot, median_calm
        FROM detector_baselines FINAL
        WHERE for_hour = {{h:DateTime('UTC')}} AND subject != '' AND {which}
        ORDER BY subject""", params).rows
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(17)]
    arrays = [np.array(c, dtype=float) for c in columns[1:]]
    return Baselines([str(s) for s in columns[0]], *arrays[:6], arrays[6] > 0, arrays[7] > 0, *arrays[8:14],
                     arrays[14] > 0, arrays[15] > 0)
