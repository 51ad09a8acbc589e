"""Spend anomalies per team, feature, customer, feature × customer and feature × customer × model, and new
spenders: one detector pass, its I/O.

The decisions are :class:`~spendstream.detect.spend.SpendAnomalyRule`'s (expected value and
uncertainty per window from counts, hour-of-week seasonality, learned schedules, a slow
window for creep, warm-up) and the incident's life is
:class:`~spendstream.detect.incidents.Hysteresis`'s (a minimum duration, one incident per
subject until it resolves, re-fires update it). What this module adds is what a pass reads:

- this hour's baselines (:func:`spendstream.detect.baseline.load`; learned once an hour);
- the last ``window_minutes`` per subject from raw ``usage_events FINAL`` (minutes of a
  table sorted by time: it costs what the window holds), and in the same scan its last
  ``short_minutes``: dollars and attempts (at least the requests); the distinct requests of both in a second
  read, only for the subjects hot by their attempts (a verdict never falls as requests rise);
- the open incidents (``detector_incidents``), and in the same statement two marks per subject (rows of the
  same table): its newest ``PRICE_BACK``, a pass whose window's requests said a new price was over
  (:meth:`~spendstream.detect.spend.SpendAnomalyRule.price_back`); and ``SLOW_HELD``, the first pass whose slow
  window was hot while its incident was open. For an incident whose fast window is calm and whose slow window is
  in its band, the slow verdict of the hour it opened in: a band that was there before the rise does not hold
  its resolve (:func:`~spendstream.detect.spend.resolve_calm`).

``bench/detector_eval`` measures it (recall, precision, false alarms, delays, dollars before
the first alert) on traffic from three real traces; the numbers are in BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.detect import baseline, raw_window, state
from spendstream.detect.correlate import SHARE, Step, and_list, correlate, headline, lifted, paging
from spendstream.detect.incidents import Hysteresis, Incident
from spendstream.detect.noise import Profiles, expect
from spendstream.detect.raw_window import RawWindow
from spendstream.detect.retry_storm import KIND as STORM
from spendstream.detect.spend import SpendAnomalyRule, resolve_calm
from spendstream.schemas.alert import Alert
from spendstream.sinks.store import Store, query_result, sql_strings, sql_time

KINDS = ("spend_anomaly", "new_spender")
PRICE_BACK = "spend_anomaly.price_back"  # mark: a pass whose window's requests were back at the usual price
_SPEND = ("usd", "attempts", "late_usd", "late_attempts")  # the window's columns a pass judges, in ``seen``'s order
SLOW_HELD = "spend_anomaly.slow"  # mark: a pass whose slow window was hot on the subject's open incident
_EVER = datetime(1970, 1, 1, tzinfo=timezone.utc)  # an incident may be open for days: every subject's newest mark


def recent_spend(store: Store, *, start: datetime, end: datetime, since: datetime | None = None,
                 leaves_of: datetime | None = None, raw: RawWindow | None = None
                 ) -> dict[str, tuple[float, float, float, float]]:
    """:func:`spend_window` as a dict: subject -> (USD, attempts, USD and attempts in ``[since, end)``)."""
    table = spend_window(store, start=start, end=end, since=since, leaves_of=leaves_of, raw=raw)
    if not table.num_rows:
        return {}
    columns = [table[c].to_pylist() for c in _SPEND]
    return dict(zip(table["subject"].to_pylist(), zip(*columns, strict=True), strict=True))


def spend_window(store: Store, *, start: datetime, end: datetime, since: datetime | None = None,
                 leaves_of: datetime | None = None, raw: RawWindow | None = None) -> pa.Table:
    """Per subject, (USD, attempts) in ``[start, end)`` and in ``[since, end)`` (``since``: ``start`` when
    None), from raw ``FINAL`` in one scan; a feature × customer × model only where the baselines of hour
    ``leaves_of`` hold it (None: none; ``baseline.PASS_SUBJECTS_SQL``: the others get no verdict).

    Attempts, not distinct requests: a request is one attempt or more, so attempts bound the requests from
    above, and a sum costs nothing per event where a set of request ids per subject costs most of the scan
    (every event is four subjects). :func:`recent_requests` counts the requests of the few subjects judged.
    As Arrow, not JSON, and kept as Arrow by the pass: a subject per active customer and feature × customer pair
    (26k at 50M events, the last ten minutes of a busy hour), which parsed value by value cost as much as the
    query; the pass turns into Python only the subjects it judges (:func:`detect_spend_anomalies`). ``raw``: the
    round's copy of raw (:mod:`~spendstream.detect.raw_window`), read where it holds ``[start, end)``."""
    return store.query_arrow(f"""
        SELECT subject, toFloat64(sumIf(ifNull(total_cost, 0), priced)) AS usd, toFloat64(count()) AS attempts,
               toFloat64(sumIf(ifNull(total_cost, 0), priced AND ts >= {{c:DateTime64(3, 'UTC')}})) AS late_usd,
               toFloat64(countIf(ts >= {{c:DateTime64(3, 'UTC')}})) AS late_attempts
        FROM (SELECT {baseline.PASS_SUBJECTS_SQL} AS subject, ts, total_cost, priced
              FROM {raw_window.source(raw, start=start, end=end)}
              WHERE ts >= {{a:DateTime64(3, 'UTC')}} AND ts < {{b:DateTime64(3, 'UTC')}})
        WHERE NOT endsWith(subject, '=') GROUP BY subject
        SETTINGS output_format_arrow_string_as_string = 1""",
                              {"a": sql_time(start), "b": sql_time(end), "c": sql_time(since or start),
                               **baseline.leaves_params(leaves_of)})


def recent_requests(store: Store, subjects: Collection[str], *, start: datetime, end: datetime,
                    since: datetime | None = None, raw: RawWindow | None = None
                    ) -> dict[str, tuple[float, float, float]]:
    """Per subject of ``subjects``, the distinct requests (a request: its id, or the event's) in ``[start, end)``
    and in ``[since, end)``, and the priced dollars of the dearest of them (its attempts in ``[start, end)``), from
    raw ``FINAL`` (or ``raw``, the round's copy of it); a subject with none is absent."""
    if not subjects:
        return {}
    rows = query_result(store, f"""
        SELECT subject, toFloat64(count()), toFloat64(countIf(late)), toFloat64(max(usd))
        FROM (SELECT subject, request, max(ts >= {{c:DateTime64(3, 'UTC')}}) AS late,
                     sumIf(ifNull(total_cost, 0), priced) AS usd
              FROM (SELECT {baseline.subjects_sql(subjects)} AS subject, ts, ifNull(request_id, event_id) AS request,
                           total_cost, priced
                    FROM {raw_window.source(raw, start=start, end=end)}
                    WHERE ts >= {{a:DateTime64(3, 'UTC')}} AND ts < {{b:DateTime64(3, 'UTC')}})
              WHERE subject IN {{s:Array(String)}} GROUP BY subject, request)
        GROUP BY subject""",
                        {"a": sql_time(start), "b": sql_time(end), "c": sql_time(since or start),
                         "s": sql_strings(subjects)}).rows
    return {str(s): (float(n), float(late), float(dearest)) for s, n, late, dearest in rows}


# a spend incident resolves after half an hour calm, however few its hot passes: a spike or a model switch on bursty
# traffic is calm for 15-20 minutes between its bursts and hot again, and three calm passes told on-call it was over
# in the lull (trigger, resolve, trigger, resolve; BENCHMARKS.md, session s20). The price: a short spike's resolve
# 15 minutes later. Retry storms keep theirs (retry_storm.HYSTERESIS)
HYSTERESIS = Hysteresis(resolve_after=6, resolve_after_max=6)


def detect_spend_anomalies(store: Store, now: datetime, *, rule: SpendAnomalyRule | None = None,
                           hysteresis: Hysteresis | None = None, hour: datetime | None = None,
                           raw: RawWindow | None = None) -> list[Alert]:
    """Alerts to store now (spend anomalies firing or resolved, new spenders); the incidents' state is saved.
    ``hour``: the hour whose baselines the round uses (:func:`~spendstream.detect.baseline.newest_hour`, found once
    for storms and spend), else found here; ``raw``: the round's copy of the fast window's raw events
    (:func:`~spendstream.detect.raw_window.read`, read once for storms and spend), else raw is read."""
    rule, hysteresis = rule or SpendAnomalyRule(), hysteresis or HYSTERESIS
    window = timedelta(minutes=rule.window_minutes)
    short = timedelta(minutes=rule.short_minutes)
    hour = hour or baseline.newest_hour(store, now)  # once: the leaves the scan keeps, the baselines read
    recent = spend_window(store, start=now - window, end=now, since=now - short if rule.short_minutes else None,
                          leaves_of=hour, raw=raw)
    if not recent.num_rows:
        recent = pa.table({"subject": pa.array([], pa.string()), **{c: pa.array([], pa.float64()) for c in _SPEND}})
    # with the retry storms this round already stepped (``AlertCycle`` runs them first): a spend rise on a
    # subject a storm or loop is paging about is that incident's (``correlate``'s ``elsewhere``)
    # and per subject the newest pass that saw its requests back at the usual price (a run at a new price is at most
    # the slow window's 24 closed hours long), and the first slow-hot pass of its open incident
    incidents, marked = state.load(store, KINDS + (STORM,),
                                   marks={PRICE_BACK: baseline.floor_hour(now) - timedelta(hours=25),
                                          SLOW_HELD: _EVER})
    storms = {key: incident for key, incident in incidents.items() if key[0] == STORM}
    incidents = {key: incident for key, incident in incidents.items() if key[0] != STORM}
    # a subject the window cannot make hot, with no open incident, no sustained shift and no claim to be a new
    # spender cannot change state: its baseline is not read
    fires = rule.could_fire(observed_usd=_column(recent, "usd"),  # by attempts: at least all
                            observed_requests=_column(recent, "attempts"))  # those requests allow
    known = baseline.load(store, now, subjects=set(recent["subject"].filter(pa.array(fires)).to_pylist())
                          | {s for _, s in incidents},
                          or_where=f"slow_hot = 1 OR (history_hours < {int(rule.warmup_hours)} "
                                   f"AND day_cost >= {float(rule.new_spender_usd)!r} "
                                   f"AND position(subject, {baseline.PAIR_MARK!r}) = 0)", hour=hour)
    subjects = known.subjects
    index = {s: i for i, s in enumerate(subjects)}
    # each judged subject's window (zeros where it spent nothing): looked up in Arrow, not a dict of every subject
    windows = np.vstack([np.column_stack([_column(recent, c) for c in _SPEND]).reshape(-1, 4), np.zeros((1, 4))])
    names = recent["subject"].combine_chunks().cast(pa.string())
    at = pc.fill_null(pc.index_in(pa.array(subjects, pa.string()), value_set=names), recent.num_rows)
    seen = windows[at.to_numpy(zero_copy_only=False)].reshape(len(subjects), 4)
    observed, requests = seen[:, 0], seen[:, 1]  # attempts until counted below
    one_slot = Profiles(known.requests[:, None], known.cost[:, None], known.peak_cost[:, None], known.dispersion,
                        known.fail_ratio, known.history_hours)
    expected = expect(one_slot, np.arange(len(subjects)), 0, window_minutes=rule.window_minutes)
    pair = np.array([baseline.PAIR_MARK in s for s in subjects], dtype=bool)  # and its leaves: a pair's line
    # (the refresh stored each subject's peak as rule.peak has it: a pair's is at least its day's busiest)
    late = ({"short": expect(one_slot, np.arange(len(subjects)), 0, window_minutes=rule.short_minutes),
             "short_usd": seen[:, 2], "short_requests": seen[:, 3]} if rule.short_minutes else {})
    fast = rule.fast(expected, observed_usd=observed, observed_requests=requests, history_hours=known.history_hours,
                     pair=pair, **late)
    # judged by attempts, at least their requests: a verdict never falls as requests rise (``rule.fast``; the
    # rule's tests hold it to that), so a subject not hot by its attempts is not hot by its requests. Count the
    # requests of those that are (most passes: none) and judge them again; and of those whose slow window a new
    # price holds (its price is judged per request below: attempts would price a retry as a request)
    priced = (known.price_hours > 0) & (known.slow_hot | ~known.slow_calm)
    if (fast.hot | priced).any():
        counted = recent_requests(store, [subjects[i] for i in np.flatnonzero(fast.hot | priced)],
                                  start=now - window, end=now, since=now - short if rule.short_minutes else None,
                                  raw=raw)
        dearest = np.zeros(len(subjects))
        for subject, (n, late_n, usd) in counted.items():
            seen[index[subject], 1], seen[index[subject], 3] = n, late_n  # (``requests`` and ``late``: views)
            dearest[index[subject]] = usd
        fast = rule.fast(expected, observed_usd=observed, observed_requests=requests,
                         history_hours=known.history_hours, pair=pair, dearest_usd=dearest, **late)
    # a new price the window's requests no longer pay is over: the closed hours' price test, which found it,
    # does not hold it; the day's median still does. Once seen back since the run at the new price began (a
    # ``PRICE_BACK`` mark), it stays over until a window is over the price test's own line again.
    seen_back = priced & np.array([hour is not None and marked.get((PRICE_BACK, s), _EVER) >= hour - timedelta(
        hours=int(h)) for s, h in zip(subjects, known.price_hours, strict=True)], dtype=bool)
    back = priced & rule.price_back(price_hours=known.price_hours, usual_per_request=known.usual_per_request,
                                    per_request=known.per_request, observed_usd=observed, observed_requests=requests,
                                    seen_back=seen_back)
    marks = [(PRICE_BACK, subjects[i]) for i in np.flatnonzero(back & ~seen_back)]  # the first of the run
    slow_hot = np.where(back, known.median_hot, known.slow_hot)
    slow_calm = np.where(back, known.median_calm, known.slow_calm)
    hot = fast.hot | slow_hot
    held = _slow_held(store, incidents, marked, known, fast.calm, slow_hot=slow_hot, slow_calm=slow_calm)
    calm = resolve_calm(fast.calm, slow_calm, held)
    # calm only because a slow window that would have held it was let go (a new price over, a band from before):
    # the longest calm wait, so a rise in waves stays one incident as it did while the slow window held it
    patient = calm & ~(fast.calm & known.slow_calm)
    alerts: list[Alert] = []
    changes: list[tuple[tuple[str, str], Incident | None, Incident | None]] = []
    steps: dict[str, Step] = {}
    todo = {s for s in subjects if hot[index[s]]} | {s for k, s in incidents if k == "spend_anomaly"}
    for subject in sorted(todo):
        i = index.get(subject)
        before = incidents.get(("spend_anomaly", subject))
        if i is None:  # no baseline any more (a subject gone quiet for weeks): let it resolve
            after, transition = hysteresis.step(before, kind="spend_anomaly", subject=subject, hot=False,
                                                very_hot=False, calm=True, onset=now - window, severity="warning")
            steps[subject] = Step(before, after, transition, 0.0, False)
        else:
            after, transition = hysteresis.step(
                before, kind="spend_anomaly", subject=subject, hot=bool(hot[i]), very_hot=bool(fast.very_hot[i]),
                calm=bool(calm[i]), onset=now - window, severity=rule.severity(float(fast.excess_usd[i]),
                                                                               fast=bool(fast.hot[i])),
                observed=float(observed[i]), patient=bool(patient[i]))
            # what it runs over its usual per window: the fast window's, or for a sustained shift alone its day's
            per_window = (float(fast.excess_usd[i]) if fast.hot[i] or not slow_hot[i]
                          else float(known.slow_excess_usd[i]) * rule.window_minutes / 1440)
            steps[subject] = Step(before, after, transition, per_window, bool(hot[i]))
    # which team a feature belongs to, only when both are open (the rest of the hierarchy is in the names), and
    # which open teams an open customer's rise can explain
    open_ = [s for s, st in steps.items() if st.after is not None]
    features = [s for s in open_ if s.startswith("feature=") and baseline.PAIR_MARK not in s]
    open_teams = {s: max(steps[s].excess_usd, 0.0) for s in open_ if s.startswith("team=")}
    teams = (teams_of(store, features, start=now - window, end=now, raw=raw)
             if features and open_teams else {})
    customers = {s: max(steps[s].excess_usd, 0.0) for s in open_ if s.startswith("customer=")
                 and baseline.PAIR_MARK not in s}
    if customers and open_teams:
        teams |= customer_teams(store, list(customers), open_teams, start=now - window, end=now, raw=raw)
    holders = (customer_holders(store, customers, features, start=now - window, end=now, raw=raw)
               if customers and features else {})
    steps = correlate(steps, teams, elsewhere=paging(storms), holders=holders)
    # and the first slow-hot pass of each open incident (a later one says nothing more)
    for subject, step in steps.items():
        changes.append((("spend_anomaly", subject), step.before, step.after))
        i = index.get(subject)
        if (step.after is not None and i is not None and slow_hot[i]
                and marked.get((SLOW_HELD, subject), _EVER) < step.after.opened_at):
            marks.append((SLOW_HELD, subject))
        if step.transition is not None:
            excess, usual, seen = ((float(fast.excess_usd[i]), float(fast.expected_usd[i]), float(observed[i]))
                                   if i is not None else (0.0, 0.0, 0.0))
            slow = i is not None and bool(slow_hot[i])
            incident = step.after if step.transition == "firing" else step.before
            price = None
            if step.transition == "firing" and slow and known.price_hours[i] > 0 and hour is not None:
                since = hour - timedelta(hours=int(known.price_hours[i]))
                price = Price(int(known.price_hours[i]), float(known.usual_per_request[i]),
                              float(known.per_request[i]), float(known.price_excess_usd[i]), hour,
                              *top_models(store, subject, since=since, end=now))
            alerts.append(_spend_alert(incident, step.transition, now=now, observed=seen, usual=usual,
                                       excess=excess, slow_excess=float(known.slow_excess_usd[i]) if slow else None,
                                       minutes=rule.window_minutes, fast=i is not None and bool(fast.hot[i]),
                                       price=price,
                                       lifts=lifted(steps, incident.dedup_key) if step.transition == "firing" else []))
    # a pair is new when its customer or its feature is, and they say so: a known customer's new feature is not
    for i in np.flatnonzero((known.history_hours < rule.warmup_hours) & (known.day_cost >= rule.new_spender_usd)
                            & ~pair):
        key = ("new_spender", subjects[i])
        if key not in incidents:
            opened = Incident("new_spender", subjects[i], "firing", baseline.floor_hour(now) - timedelta(days=1),
                              "warning")
            changes.append((key, None, opened))
            alerts.append(Alert(kind="new_spender", severity="warning", state="firing", subject=subjects[i],
                                window_start=opened.opened_at, window_end=now,
                                observed=Decimal(f"{known.day_cost[i]:.6f}"), expected=None, dedup_key=opened.dedup_key,
                                message=f"${known.day_cost[i]:.2f} in the last 24 h from a key with "
                                        f"{int(known.history_hours[i])} h of history: not yet watched for anomalies "
                                        f"(that needs {rule.warmup_hours // 24} days)", created_at=now))
    for (kind, subject), incident in incidents.items():  # warmed up: the anomaly detector watches it now
        i = index.get(subject)
        if kind == "new_spender" and (i is None or known.history_hours[i] >= rule.warmup_hours):
            changes.append(((kind, subject), incident, None))
    state.save(store, changes, now=now, marks=marks)
    return alerts


def _slow_held(store: Store, incidents: dict[tuple[str, str], Incident], marked: dict[tuple[str, str], datetime],
               known: baseline.Baselines, fast_calm: np.ndarray, *, slow_hot: np.ndarray,
               slow_calm: np.ndarray) -> np.ndarray:
    """Per subject of ``known``, whether its slow window holds its open incident's resolve
    (:func:`~spendstream.detect.spend.resolve_calm`): unless it was in its band (neither hot nor calm) already in
    the verdict in force when the incident opened (the hour it opened in, refreshed from the closed hours before
    it) and has not been hot while it was open (``SLOW_HELD``). Only the subjects it can matter for (fast window
    calm, slow window in its band now) read that hour's verdict, one read per hour of opening; a verdict no longer
    stored (``detector_baselines`` keeps two days) holds, as before. ``slow_hot`` and ``slow_calm``: the slow
    verdict the pass judges by (:meth:`~spendstream.detect.spend.SpendAnomalyRule.price_back`)."""
    held = np.ones(len(known.subjects), dtype=bool)
    asked: dict[datetime, list[int]] = {}
    for i, subject in enumerate(known.subjects):
        incident = incidents.get(("spend_anomaly", subject))
        if (incident is None or not fast_calm[i] or slow_hot[i] or slow_calm[i]
                or marked.get((SLOW_HELD, subject), _EVER) >= incident.opened_at):
            continue
        asked.setdefault(baseline.floor_hour(incident.opened_at), []).append(i)
    for hour, rows in asked.items():
        before = baseline.load(store, hour, subjects=[known.subjects[i] for i in rows], hour=hour)
        banded = {s for s, h, c in zip(before.subjects, before.slow_hot, before.slow_calm, strict=True)
                  if not h and not c}
        for i in rows:
            held[i] = known.subjects[i] not in banded
    return held


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table[name].to_numpy(), dtype=float)


def teams_of(store: Store, features: list[str], *, start: datetime, end: datetime,
             raw: RawWindow | None = None) -> dict[str, set[str]]:
    """The teams each of ``features`` (subjects) spent under in ``[start, end)``, from raw ``FINAL`` (or ``raw``,
    the round's copy of it)."""
    params = {"a": sql_time(start), "b": sql_time(end)} | {f"f{i}": f.removeprefix("feature=")
                                                          for i, f in enumerate(features)}
    rows = query_result(store, f"""
        SELECT DISTINCT feature, team FROM {raw_window.source(raw, start=start, end=end)}
        WHERE ts >= {{a:DateTime64(3, 'UTC')}} AND ts < {{b:DateTime64(3, 'UTC')}} AND ifNull(team, '') != ''
          AND feature IN ({', '.join(f'{{f{i}:String}}' for i in range(len(features)))})""", params).rows
    teams: dict[str, set[str]] = {}
    for feature, team in rows:
        teams.setdefault(f"feature={feature}", set()).add(f"team={team}")
    return teams


def spent_under(store: Store, customers: list[str], column: str, names: Collection[str], *, start: datetime,
                end: datetime, raw: RawWindow | None = None) -> dict[tuple[str, str], float]:
    """The dollars each of ``customers`` (subjects) spent under each of ``names`` (subjects of ``column``: ``team``
    or ``feature``) in ``[start, end)``, from raw ``FINAL`` (or ``raw``, the round's copy): what links an open
    customer to an open team or feature (:func:`customer_teams`, :func:`customer_holders`)."""
    params = {"a": sql_time(start), "b": sql_time(end)} | {f"c{i}": c.removeprefix("customer=")
                                                          for i, c in enumerate(customers)}
    params |= {f"n{i}": n.removeprefix(f"{column}=") for i, n in enumerate(names)}
    rows = query_result(store, f"""
        SELECT customer, {column}, toFloat64(sum(ifNull(total_cost, 0)))
        FROM {raw_window.source(raw, start=start, end=end)}
        WHERE ts >= {{a:DateTime64(3, 'UTC')}} AND ts < {{b:DateTime64(3, 'UTC')}}
          AND customer IN ({', '.join(f'{{c{i}:String}}' for i in range(len(customers)))})
          AND {column} IN ({', '.join(f'{{n{i}:String}}' for i in range(len(names)))})
        GROUP BY customer, {column}""", params).rows
    return {(f"customer={c}", f"{column}={n}"): float(usd) for c, n, usd in rows}


def customer_teams(store: Store, customers: list[str], team_excess: Mapping[str, float], *, start: datetime,
                   end: datetime, raw: RawWindow | None = None, share: float = SHARE) -> dict[str, set[str]]:
    """Per customer of ``customers`` (subjects), the teams of ``team_excess`` (subject: dollars above expected in
    the window) its rise can explain: those it spent at least ``share`` of the team's excess under in ``[start,
    end)``. A customer's spike over several features of one team lifts the team and no feature enough to explain
    it; linked, the team joins the customer's incident (session s22's outside evaluation paged a customer's weekend
    spike and, ten minutes later, its team). The dollars bound what the customer can hold of the team's rise;
    ``correlate`` then asks whether its own excess is at least ``share`` of the team's, as for any child."""
    out: dict[str, set[str]] = {}
    for (customer, team), usd in spent_under(store, customers, "team", team_excess, start=start, end=end,
                                             raw=raw).items():
        if team_excess[team] > 0 and usd >= share * team_excess[team]:
            out.setdefault(customer, set()).add(team)
    return out


def customer_holders(store: Store, customer_excess: Mapping[str, float], features: list[str], *, start: datetime,
                     end: datetime, raw: RawWindow | None = None, share: float = SHARE) -> dict[str, set[str]]:
    """Per customer of ``customer_excess`` (subject: dollars above expected in the window), the features of
    ``features`` that can hold its rise: those it spent at least ``share`` of its excess on in ``[start, end)``.
    ``correlate`` joins the customer to such a feature when the feature rose well beyond it: a feature moved to a
    dearer model lifts each of its customers a little (session s23's outside evaluation: a switch on one feature
    paged the feature and then eight of its customers, each on its own)."""
    out: dict[str, set[str]] = {}
    for (customer, feature), usd in spent_under(store, list(customer_excess), "feature", features, start=start,
                                                end=end, raw=raw).items():
        if customer_excess[customer] > 0 and usd >= share * customer_excess[customer]:
            out.setdefault(customer, set()).add(feature)
    return out


@dataclass(frozen=True, slots=True)
class Price:
    """A subject's new price per request, as the hour's baselines found it (:meth:`SpendAnomalyRule.price_shift`)."""

    hours: int
    usual_per_request: float
    per_request: float
    excess_usd: float
    for_hour: datetime  # the baselines' hour: the run of hours ends there
    model: str = ""     # the model most of its dollars went to since the price moved ("": unknown) ...
    was: str = ""       # ... and as long before

    def text(self) -> str:
        """"price per request" where the model it ran on changed; "cost per request" where it did not (bigger or
        costlier requests on the same model: the catalog's price did not move) or where the models are unknown."""
        since = self.for_hour - timedelta(hours=self.hours)
        times = self.per_request / self.usual_per_request if self.usual_per_request > 0 else float("inf")
        switched = bool(self.model and self.was and self.was != self.model)
        on = (f" on model {self.model}" + (f" (was {self.was})" if switched else "") if self.model else "")
        same = ", the same model as before" if self.model and self.was == self.model else ""
        return (f"{'price' if switched else 'cost'} per request ${self.usual_per_request:.4f} -> "
                f"${self.per_request:.4f} ({times:.1f}x) since {since:%Y-%m-%d %H:%M} UTC{on}{same}: "
                f"${self.excess_usd:.2f} above what those requests usually cost (${self.excess_usd / self.hours:.2f} "
                "an hour)")


def slow_news(price: Price | None, slow_excess: float | None) -> str:
    """What a page says the slow window found: the new price per request if it explains the day's rise, else the
    day's rise first (more requests, not dearer ones), then the dearer requests as a detail. A customer whose
    volume creeps up and whose requests ran a little dearer for an hour was paged "price per request 1.7x"
    (session s22's outside evaluation) although the price was not the news."""
    day = (f"the last 24 h ran ${slow_excess:.2f} above their usual (a sustained shift, "
           f"${slow_excess / 24:.2f} an hour)" if slow_excess is not None else "")
    if price is None:
        return day
    if slow_excess is not None and price.excess_usd < slow_excess / 2:
        return f"{day}; of that, {price.text()}"
    return price.text()


def top_models(store: Store, subject: str, *, since: datetime, end: datetime,
               before: timedelta = timedelta(days=1)) -> tuple[str, str]:
    """The model most of ``subject``'s dollars went to in ``[since, end)``, and in the ``before`` (a day) before
    ``since`` ("" where none), from raw ``FINAL``: read for a page on a new price only (one subject, once per
    incident). A day, not as long as the run at the new price: a customer whose hours count only from 13:00 (12:00
    had too few requests) on a feature switched at 11:19 read 11:00–13:00 as "before" and was paged "the same model
    as before" (session s23's outside evaluation)."""
    columns = _subject_columns(subject)
    where = " AND ".join(f"ifNull({c}, '') = {{{c}:String}}" for c in columns)
    rows = query_result(store, f"""
        SELECT ts >= {{s:DateTime64(3, 'UTC')}} AS after, model FROM usage_events FINAL
        WHERE ts >= {{a:DateTime64(3, 'UTC')}} AND ts < {{b:DateTime64(3, 'UTC')}} AND priced AND {where}
        GROUP BY after, model ORDER BY after, sum(total_cost) DESC, model LIMIT 1 BY after""",
                        {"a": sql_time(since - before), "s": sql_time(since), "b": sql_time(end),
                         **columns}).rows
    top = {bool(after): str(model) for after, model in rows}
    return top.get(True, ""), top.get(False, "")


def _subject_columns(subject: str) -> dict[str, str]:
    """The raw columns a subject's name fixes: ``team=t`` {team: t}, ``feature=f,customer=c[,model=m]`` {feature,
    customer[, model]}, as :data:`spendstream.detect.baseline.SUBJECTS_SQL` names them."""
    if baseline.PAIR_MARK not in subject:
        kind, _, value = subject.partition("=")
        return {kind: value}
    feature, _, rest = subject.removeprefix("feature=").partition(baseline.PAIR_MARK)
    customer, _, model = rest.partition(baseline.MODEL_MARK)
    return {"feature": feature, "customer": customer} | ({"model": model} if model else {})


def _spend_alert(incident: Incident, transition: str, *, now: datetime, observed: float, usual: float, excess: float,
                 slow_excess: float | None, minutes: int, lifts: list[str], fast: bool = True,
                 price: Price | None = None) -> Alert:
    """``lifts``: the subjects attached to ``incident`` (its message names them); an attached incident's alert
    names its root in ``correlated_with`` and is not delivered on its own. ``fast``: whether the fast window is over
    its line; when it is not, the page leads with what the slow window found (the new ``price``, or the day's rise):
    the fast window's excess, nothing or below zero, is not the news."""
    if transition == "firing":
        now_text = f"${observed:.2f} in the last {minutes} min, usually ${usual:.2f} (±noise) at this hour of the week"
        slow_text = slow_news(price, slow_excess)
        if fast or not slow_text:
            message = f"{now_text}: ${max(excess, 0):.2f} above what is expected{f'; {slow_text}' if slow_text else ''}"
        else:
            message = f"{slow_text}; {now_text}"
    else:
        message = f"back to usual: ${observed:.2f} in the last {minutes} min (usually ${usual:.2f})"
    if lifts:
        message = f"{headline(incident.subject, lifts)}: {message}; also lifts {and_list(lifts)}"
    return Alert(kind="spend_anomaly", severity=incident.severity, state=transition, subject=incident.subject,
                 window_start=incident.opened_at, window_end=now, observed=Decimal(f"{observed:.6f}"),
                 expected=Decimal(f"{usual:.6f}"), dedup_key=incident.dedup_key, message=message, created_at=now,
                 correlated_with=incident.root or None)
