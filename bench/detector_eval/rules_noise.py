"""The detectors that know their noise (issue 18), over a simulated world, through the package's own code.

What each pass sees is what the package's readers compute in production: hour-grain arrays
learned once an hour (:func:`spendstream.detect.noise.learn`, fed here from the simulated
hours and their 10-minute peaks, there from ``usage_hours`` and ``detector_peaks``), the
last 10 minutes and 2 hours per subject, and the incidents still open. The decisions and
the state machine are the package's (``SpendAnomalyRule``, ``RetryStormRule``,
``Hysteresis``); only the summing of windows is done here, with numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import numpy as np

from bench.detector_eval.rules import Fired, passes
from bench.detector_eval.traffic import DAY, EVAL_START, MONTH_DAYS, World
from spendstream.alerting import digest
from spendstream.detect import schedules
from spendstream.detect.anomaly import HYSTERESIS as SPEND_HYSTERESIS
from spendstream.detect.correlate import SHARE, Step, correlate, parents
from spendstream.detect.incidents import Hysteresis, Incident
from spendstream.detect.noise import Expectation, Profiles, expect, learn
from spendstream.detect.retry_storm import HYSTERESIS, STORM_WARMUP_HOURS
from spendstream.detect.spend import SpendAnomalyRule, SpendVerdict, resolve_calm
from spendstream.detect.storm import RetryStormRule, others_ratio, settled
from spendstream.schemas.alert import Alert
from spendstream.sinks.shapes import FEATURE_FAILURES

EPOCH = datetime(2026, 1, 5, tzinfo=timezone.utc)  # a Monday: minute 0 of every world
LEARN_DAYS = 28
LEARN_LAG_H = 48  # the profile ends two days back: what creeps in now is not yet "usual"


@dataclass(frozen=True)
class Pass:
    """What one spend pass saw and decided, per subject (rows of ``names``): for diagnostics."""

    minute: int
    names: list[str]
    expected: Expectation
    fast: SpendVerdict
    slow: SpendVerdict
    observed_usd: np.ndarray
    observed_requests: np.ndarray
    profiles: Profiles
    short: dict | None = None  # the last ``short_minutes``: fast()'s ``short``, ``short_usd``, ``short_requests``


def at(minute: int) -> datetime:
    return EPOCH + timedelta(minutes=minute)


class _Hours:
    """A world's per-subject hourly sums and 10-minute peaks."""

    def __init__(self, world: World, rows: np.ndarray, membership: np.ndarray | None = None) -> None:
        m = world.membership[rows] if membership is None else membership
        hours = world.minutes // 60

        def hourly(a: np.ndarray) -> np.ndarray:
            return (m @ a).reshape(len(rows), hours, 60).sum(axis=2, dtype=np.float64)

        self.cost, self.requests = hourly(world.cost), hourly(world.requests)
        self.attempts, self.failed = hourly(world.attempts), hourly(world.failed)
        c = np.concatenate([np.zeros((len(rows), 10)), np.cumsum(m @ world.cost, axis=1, dtype=np.float64)], axis=1)
        rolling = c[:, 10:] - c[:, :-10]  # the 10 minutes ending with each minute
        self.peak = rolling.reshape(len(rows), hours, 60).max(axis=2)
        seen = self.requests > 0
        self.first = np.where(seen.any(axis=1), seen.argmax(axis=1), hours)

    def profiles(self, end_hour: int):
        start = max(0, end_hour - LEARN_DAYS * 24)
        span = slice(start, end_hour)
        return learn(requests=self.requests[:, span], cost=self.cost[:, span], attempts=self.attempts[:, span],
                     failed=self.failed[:, span], peak_cost=self.peak[:, span],
                     first_hour_of_week=start % 168,
                     first_hour=np.clip(self.first - start, 0, end_hour - start))


def spend(world: World, rule: SpendAnomalyRule | None = None, hysteresis: Hysteresis | None = None, *,
          probe: Callable[[Pass], None] | None = None, correlated: bool = True,
          storms: list[Fired] | None = None) -> list[Fired]:
    """``probe`` (diagnostics, :mod:`.misses`) sees every pass's windows, expectations and verdicts;
    ``correlated``: as the package, the subjects one cause lifts are one incident (False: each its own);
    ``storms``: :func:`retries`' alerts on the same world, which a round steps first: a spend rise on a subject
    a storm is paging about joins the storm's incident (``correlate``'s ``elsewhere``)."""
    rule, hysteresis = rule or SpendAnomalyRule(), hysteresis or SPEND_HYSTERESIS  # as detect_spend_anomalies
    # team, feature, customer and feature × customer: a spike of a few % of a busy customer is most of its pair;
    # and as the refresh keeps them, feature × customer × model where a pair has several models: a spike on one
    # model of a busy pair is a few % of the pair and most of its model. Held to a pair's line (``pair``).
    pair_names, pair_membership = world.pairs()
    model_names, model_membership = world.models()
    names = world.subjects + pair_names + model_names
    membership = np.concatenate([world.membership, pair_membership, model_membership])
    rows = np.arange(len(names))
    row_of = {name: i for i, name in enumerate(names)}
    teams = {f"feature={leaf.feature}": {f"team={leaf.team}"} for leaf in world.leaves}
    # (customer, team) and (customer, feature) subjects -> their leaves (anomaly.customer_teams, customer_holders)
    leaves_of: dict[tuple[str, str], list[int]] = {}
    for k, leaf in enumerate(world.leaves):
        leaves_of.setdefault((f"customer={leaf.customer}", f"team={leaf.team}"), []).append(k)
        leaves_of.setdefault((f"customer={leaf.customer}", f"feature={leaf.feature}"), []).append(k)
    is_pair = np.arange(len(names)) >= len(world.subjects)
    hours = _Hours(world, rows, membership)
    cost, requests = _cumulative(membership, world.cost), _cumulative(membership, world.requests)
    w = rule.window_minutes
    open_: dict[int, Incident] = {}
    slow_held: dict[int, int] = {}  # as detect_spend_anomalies' marks: row -> a pass whose slow window was hot on
    #                                 its open incident (the first of that incident)
    verdicts: dict[int, SpendVerdict] = {}  # hour -> the slow window's verdict refreshed at its start
    newcomers: set[int] = set()
    out: list[Fired] = []
    slow = profiles = shift = None
    last_back = np.full(len(names), -1)  # as detect_spend_anomalies' PRICE_BACK marks: the last pass seeing it back
    paging = _Paging(storms or [])
    for t in passes(world):
        if profiles is None or t % 60 == 0:
            now_h = t // 60
            profiles = _remembered(hours.profiles(now_h - LEARN_LAG_H), hours, now_h, rule, is_pair)
            last = np.arange(now_h - 24, now_h)
            slow = rule.slow(observed_usd=hours.cost[:, last], expected_usd=profiles.cost[:, last % 168],
                             expected_requests=profiles.requests[:, last % 168], history_hours=profiles.history_hours,
                             dispersion=profiles.dispersion, previous_usd=hours.cost[:, last - 24],
                             previous_expected_usd=profiles.cost[:, (last - 24) % 168],
                             previous_expected_requests=profiles.requests[:, (last - 24) % 168],
                             observed_requests=hours.requests[:, last],
                             per_request=profiles.per_request[:, last[-rule.price_hours:] % 168],
                             price_cv2=profiles.price_cv2)
            # as the refresh stores it: the closed hours in a row at a new price, and the usual price over them
            shift = rule.price_shift(observed_usd=hours.cost[:, last], observed_requests=hours.requests[:, last],
                                     per_request=profiles.per_request[:, last % 168], price_cv2=profiles.price_cv2)
            verdicts[now_h] = slow  # as the baselines table keeps each hour's verdict
            day = hours.cost[:, last].sum(axis=1)
            newish = (profiles.history_hours < rule.warmup_hours) & (day >= rule.new_spender_usd) & ~is_pair
            for s in np.flatnonzero(newish):  # as detect_spend_anomalies: a pair is new when its customer is
                if s not in newcomers:
                    newcomers.add(s)
                    out.append(Fired("noise", "new_spender", names[s], t, "firing", "warning"))
        exp = expect(profiles, rows, ((t - 1) // 60) % 168, window_minutes=w)
        short = {}
        if rule.short_minutes:  # as detect_spend_anomalies: the last minutes of the same window, same hour
            sw = rule.short_minutes
            short = {"short": expect(profiles, rows, ((t - 1) // 60) % 168, window_minutes=sw),
                     "short_usd": cost[:, t] - cost[:, t - sw], "short_requests": requests[:, t] - requests[:, t - sw]}
        fast = rule.fast(exp, observed_usd=cost[:, t] - cost[:, t - w],
                         observed_requests=requests[:, t] - requests[:, t - w], history_hours=profiles.history_hours,
                         pair=is_pair, **short)
        # as detect_spend_anomalies: a new price the window's requests no longer pay is over
        n = requests[:, t] - requests[:, t - w]
        priced = (shift.hours > 0) & (slow.hot | ~slow.calm)
        seen_back = priced & (last_back >= (now_h - shift.hours) * 60)  # since the run at the new price began
        back = priced & rule.price_back(price_hours=shift.hours, usual_per_request=shift.usual_per_request,
                                        per_request=shift.per_request, observed_usd=cost[:, t] - cost[:, t - w],
                                        observed_requests=n, seen_back=seen_back)
        last_back[back & ~seen_back] = t
        slow_hot, slow_calm = np.where(back, slow.median_hot, slow.hot), np.where(back, slow.median_calm, slow.calm)
        hot = fast.hot | slow_hot
        # as detect_spend_anomalies: a band the slow window was in when an incident opened (the verdict of that
        # hour), not hot since, does not hold it
        held = np.ones(len(names), dtype=bool)
        for s, incident in open_.items():
            opened = int((incident.opened_at - EPOCH).total_seconds() // 60)
            before = verdicts.get(opened // 60)
            if (before is not None and not before.hot[s] and not before.calm[s] and not slow_hot[s]
                    and slow_held.get(s, -1) < opened):
                held[s] = False
        calm = resolve_calm(fast.calm, slow_calm, held)
        patient = calm & ~(fast.calm & slow.calm)  # as detect_spend_anomalies: calm only by a slow window let go
        if probe is not None:
            # the slow verdict this pass used (a new price its window no longer pays: by the median alone)
            probe(Pass(t, names, exp, fast, replace(slow, hot=slow_hot, calm=slow_calm), cost[:, t] - cost[:, t - w],
                       requests[:, t] - requests[:, t - w], profiles, short or None))
        steps = {}
        for s in sorted(set(np.flatnonzero(hot | fast.very_hot)) | set(open_)):
            severity = rule.severity(float(fast.excess_usd[s]), fast=bool(fast.hot[s]))
            incident, transition = hysteresis.step(
                open_.get(s), kind="spend_anomaly", subject=names[s], hot=bool(hot[s]),
                very_hot=bool(fast.very_hot[s]), calm=bool(calm[s]), onset=at(t - w), severity=severity,
                observed=float(fast.excess_usd[s]), patient=bool(patient[s]))
            per_window = (float(fast.excess_usd[s]) if fast.hot[s] or not slow_hot[s]
                          else float(slow.excess_usd[s]) * w / 1440)  # as detect_spend_anomalies
            steps[names[s]] = Step(open_.get(s), incident, transition, per_window, bool(hot[s]))
        # as detect_spend_anomalies (anomaly.customer_teams): an open customer explains an open team it spent at
        # least SHARE of the team's excess under in the window
        linked = teams
        open_teams = {n: max(st.excess_usd, 0.0) for n, st in steps.items() if st.after is not None
                      and n.startswith("team=")}
        open_customers = [n for n, st in steps.items() if st.after is not None and n.startswith("customer=")]
        if open_teams and open_customers:
            linked = dict(teams)
            for c in open_customers:
                for team, excess in open_teams.items():
                    usd = float(world.cost[leaves_of.get((c, team), []), t - w:t].sum())
                    if excess > 0 and usd >= SHARE * excess:
                        linked[c] = linked.get(c, set()) | {team}
        # and (customer_holders) the open features an open customer spent at least SHARE of its excess on
        holders: dict[str, set[str]] = {}
        open_features = [n for n, st in steps.items() if st.after is not None and n.startswith("feature=")
                         and ",customer=" not in n]
        for c in open_customers if open_features else []:
            excess = max(steps[c].excess_usd, 0.0)
            for f in open_features:
                usd = float(world.cost[leaves_of.get((c, f), []), t - w:t].sum())
                if excess > 0 and usd >= SHARE * excess:
                    holders[c] = holders.get(c, set()) | {f}
        for name, step in (correlate(steps, linked, elsewhere=paging.at(t), holders=holders) if correlated
                           else steps).items():
            _record(out, open_, row_of[name], step.after, step.transition, t, world, step.before)
            s = row_of[name]
            if step.after is not None and slow_hot[s] and slow_held.get(s, -1) < int(
                    (step.after.opened_at - EPOCH).total_seconds() // 60):
                slow_held[s] = t
    return out


class _Paging:
    """What :func:`~spendstream.detect.correlate.paging` reads from the incidents' state, from the alerts the
    storms' passes recorded: at minute ``t``, each subject whose storm incident is firing on its own or attached
    to a root that is, with that page's dedup key."""

    def __init__(self, storms: list[Fired]) -> None:
        self.feed = sorted((f for f in storms if f.state != "escalated"), key=lambda f: f.minute)
        self.next = 0
        self.open: dict[str, tuple[str, str]] = {}  # subject -> (its incident's key, its root's or "")

    def at(self, t: int) -> dict[str, str]:
        while self.next < len(self.feed) and self.feed[self.next].minute <= t:
            f = self.feed[self.next]
            self.next += 1
            if f.state == "resolved":
                self.open.pop(f.subject, None)
            else:
                opened = EPOCH + timedelta(minutes=f.onset)
                self.open[f.subject] = (f"{f.kind}:{f.subject}:{opened:%Y-%m-%dT%H:%M}", f.part_of)
        roots = {key for key, root in self.open.values() if not root}
        return {s: root or key for s, (key, root) in self.open.items() if (root or key) in roots}


def _remembered(profiles: Profiles, hours: _Hours, now_h: int, rule: SpendAnomalyRule, is_pair: np.ndarray
                ) -> Profiles:
    """As the refresh does: the peaks ``rule.peak`` holds windows against, and what the same place a "month"
    (``MONTH_DAYS``) back promises (:mod:`spendstream.detect.schedules`, over the hours around ``now_h``; the
    older months lie before the world and hold nothing)."""
    cost = np.zeros((len(is_pair), schedules.MONTHS, schedules.SPAN_HOURS))
    first = now_h - MONTH_DAYS * 24 - schedules.BEFORE_HOURS
    if first >= 0:
        cost[:, 0, :] = hours.cost[:, first:first + schedules.SPAN_HOURS]
    starts = [at((first - 24 * 30 * k) * 60) for k in range(schedules.MONTHS)]
    span = (np.arange(schedules.SPAN_HOURS) + now_h - schedules.BEFORE_HOURS) % 168
    planned = schedules.schedule(schedules.Memory(cost, starts), profiles.cost[:, span], now=at(now_h * 60))
    peak = np.stack([rule.peak(profiles.peak_cost[:, h], profiles.day_peak_in(h), pair=is_pair) for h in range(168)],
                    axis=1)
    expected = profiles.cost.copy()
    for k, h in enumerate(span):  # the hours the passes of this hour ask about: the one before it and this one
        expected[:, h] = np.maximum(expected[:, h], planned.cost[:, k])
        if k >= schedules.BEFORE_HOURS - 1:
            peak[:, h] = np.maximum(peak[:, h], planned.peak[:, schedules.BEFORE_HOURS - 1:].max(axis=1))
    return Profiles(profiles.requests, expected, peak, profiles.dispersion, profiles.fail_ratio,
                    np.maximum(profiles.history_hours, planned.history_hours), profiles.day_peak,
                    profiles.weekend_day_peak, profiles.per_request, profiles.price_cv2)


def _cumulative(membership: np.ndarray, array: np.ndarray) -> np.ndarray:
    """As :func:`.rules.cumulative`, over the subjects of ``membership``."""
    per_subject = (membership @ array).astype(np.float64)
    return np.concatenate([np.zeros((per_subject.shape[0], 1)), np.cumsum(per_subject, axis=1)], axis=1)


def retries(world: World, rule: RetryStormRule | None = None, hysteresis: Hysteresis | None = None, *,
            correlated: bool = True, by_minute: bool = True) -> list[Fired]:
    """``correlated``: as the package, the subjects one storm lifts are one incident (False: each its own);
    ``by_minute``: as the package, the fast window's others are the minutes' cross-section (False: the window's
    average, as before session s14; for comparison)."""
    rule, hysteresis = rule or RetryStormRule(), hysteresis or HYSTERESIS  # as detect_retry_storms
    # features, customers and (as detect_retry_storms) feature x customer pairs, for storms only: a storm on one
    # customer of a busy feature hides in both totals, not in its pair
    pair_names, pair_membership = world.pairs()
    keep = [i for i, s in enumerate(world.subjects) if not s.startswith("team=")]
    names = [world.subjects[i] for i in keep] + pair_names
    membership = np.concatenate([world.membership[keep], pair_membership])
    rows = np.arange(len(names))
    row_of = {name: i for i, name in enumerate(names)}
    is_pair = rows >= len(keep)
    alone = is_pair[:, None]  # a pair's slow window is not read: its storms are the fast window's
    hours = _Hours(world, rows, membership)
    # a loop (a request retried on and on, a request shape repeated) is its feature's, its customer's and its pair's:
    # as detect_retry_storms, the pair explains both, one incident
    shaped = membership > 0
    features = np.array([s.startswith("feature=") and not p for s, p in zip(names, is_pair, strict=True)])
    providers = sorted({leaf.provider for leaf in world.leaves})
    onehot = np.array([[leaf.provider == p for p in providers] for leaf in world.leaves], dtype=float)
    # (subjects × providers, leaves): a leaf's window sums -> each subject's, per provider
    by_provider = (membership[:, None, :] * onehot.T[None, :, :]).reshape(-1, len(world.leaves))

    def leaf_cumulative(a: np.ndarray) -> np.ndarray:
        return np.concatenate([np.zeros((a.shape[0], 1)), np.cumsum(a, axis=1, dtype=np.float64)], axis=1)

    failed, attempts = leaf_cumulative(world.failed), leaf_cumulative(world.attempts)
    # per subject, provider and minute of the evaluated week (and the fast window before it), for the minutes'
    # cross-section: computed once, sliced per pass
    first = EVAL_START - max(rule.window_minutes, rule.slow_minutes) if by_minute else 0
    shape = (len(rows), len(providers), -1)
    minute_a = (by_provider @ world.attempts[:, first:]).reshape(shape) if by_minute else None
    minute_f = (by_provider @ world.failed[:, first:]).reshape(shape) if by_minute else None
    failed_cost = leaf_cumulative(world.failed_cost)
    w, slow_w = rule.window_minutes, rule.slow_minutes
    open_: dict[int, Incident] = {}
    stormed: dict[int, int] = {}  # as detect_retry_storms' marks: row -> the last pass that found its storm paged
    out: list[Fired] = []
    own = None
    per_provider = by_provider.reshape(len(rows), len(providers), -1)
    for t in passes(world):
        if own is None or t % 60 == 0:  # as the refresh does: the last week's failures per attempt, through now
            week = slice(t // 60 - 168, t // 60)
            tried = hours.attempts[:, week].sum(axis=1)
            own = np.where(tried > 0, hours.failed[:, week].sum(axis=1) / np.maximum(tried, 1), 0.0)

        def split(c: np.ndarray, minutes: int, t: int = t) -> np.ndarray:
            return (by_provider @ (c[:, t] - c[:, t - minutes])).reshape(len(rows), len(providers))

        # as detect_retry_storms: a subject whose storm was paged within the slow window is judged on it from that
        # pass on (storm.settled); a pair has no slow window
        starts = {i: m for i, m in stormed.items() if m >= t - slow_w}

        def judged(c: np.ndarray, t: int = t, starts: dict[int, int] = starts) -> tuple[np.ndarray, np.ndarray]:
            """(subjects, providers): each subject's slow window, and the features' totals over the same minutes."""
            out = np.where(alone, 0.0, split(c, slow_w))
            total = np.repeat(split(c, slow_w)[features].sum(axis=0)[None, :], len(rows), axis=0)
            for m in set(starts.values()):
                at = [i for i, start in starts.items() if start == m and not is_pair[i]]
                out[at] = per_provider[at] @ (c[:, t] - c[:, m])
                total[at] = (per_provider[features] @ (c[:, t] - c[:, m])).sum(axis=0)
            return out, total

        leaf_max = world.max_attempt[:, t - w:t].max(axis=1)
        leaf_repeats = world.repeats[:, t - w:t].sum(axis=1)
        # (the package sums, over the slow window, the ten minutes a shape repeated in: here every minute of one)
        slow_repeats = np.where(shaped, world.repeats[:, t - slow_w:t].sum(axis=1)[None, :], 0).max(axis=1)
        longest = np.where(shaped, leaf_max[None, :], 0).max(axis=1)
        repeats = np.where(shaped, leaf_repeats[None, :], 0).max(axis=1)
        # as fast_window: what the other traffic failed at in the minutes of each subject's attempts
        others = peers(minute_a[:, :, t - w - first:t - first], minute_f[:, :, t - w - first:t - first],
                       features) if by_minute else None
        (slow_failed, total_f), (slow_attempts, total_a) = judged(failed), judged(attempts)
        slow_others = others_ratio(total_f, total_a, failed=slow_failed, attempts=slow_attempts)
        if by_minute:  # as feature_windows: a feature's slow others by period (not one judged since its storm)
            periods = [a[:, :, t - slow_w - first:t - first].reshape(*a.shape[:2], -1, PERIOD_MINUTES).sum(axis=3)
                       for a in (minute_a, minute_f)]
            by_period = features & ~np.isin(rows, list(starts))
            slow_others[by_period] = peers(*periods, features)[by_period]
        verdict = rule.judge(failed=split(failed, w), attempts=split(attempts, w), own_ratio=own,
                             slow_failed=slow_failed, slow_attempts=slow_attempts,
                             max_attempt=longest, repeats=repeats, counted=features, slow_repeats=slow_repeats,
                             others=others, **guard(split, failed, attempts, w, rule.burn_now_minutes, features),
                             slow_others=slow_others,
                             # as fast_window's latest_* (silent there, a storm must have lasted: judge reads the
                             # slow window less the fast one, as the package does; a pair's is zero)
                             latest_failed=split(failed, rule.storm_now_minutes),
                             latest_attempts=split(attempts, rule.storm_now_minutes))
        # as detect_retry_storms: storms need a day of history, loops do not
        volume = rule.loop_volume(split(attempts, w).sum(axis=1), slow_attempts.sum(axis=1))  # as judge's
        loop = rule.looping(longest, repeats, slow_repeats, **volume)
        warm = (t // 60 - hours.first) >= STORM_WARMUP_HOURS
        hot, very_hot = verdict.hot & (warm | loop), verdict.very_hot & (warm | loop)
        wasted = split(failed_cost, STEP_MINUTES).sum(axis=1)
        ratio = verdict.expected_ratio  # as detect_retry_storms: failures above expected, per fast window
        fast_f, fast_a = split(failed, w).sum(axis=1), split(attempts, w).sum(axis=1)
        slow_f, slow_a = slow_failed.sum(axis=1), slow_attempts.sum(axis=1)
        excess = np.maximum(fast_f - ratio * fast_a, (slow_f - ratio * slow_a) * w / slow_w)
        shape_loop = rule.looping(np.zeros(len(rows)), repeats, slow_repeats, **volume)  # as detect_retry_storms
        excess = np.maximum(excess, np.where(shape_loop, np.maximum(repeats, slow_repeats * w / slow_w), 0.0))
        calm = settled(verdict)  # as detect_retry_storms: an incident is held while its (judged) slow window burns
        thin = fast_a < rule.min_failed  # as detect_retry_storms: too few attempts to tell, calm patiently
        steps = {}
        for i in sorted(set(np.flatnonzero(hot)) | set(open_)):
            incident, transition = hysteresis.step(
                open_.get(i), kind="retry_storm", subject=names[i], hot=bool(hot[i]),
                very_hot=bool(very_hot[i]), calm=bool(calm[i]), onset=at(t - w), severity="error",
                observed=float(verdict.z[i]), wasted_usd=float(wasted[i]), patient=bool(thin[i]))
            steps[names[i]] = Step(open_.get(i), incident, transition, float(excess[i]), bool(hot[i]))
        ended = set()
        for name, step in (correlate(steps, {}, follow_parts=True) if correlated else steps).items():
            _record(out, open_, row_of[name], step.after, step.transition, t, world, step.before)
            if step.after is not None and step.after.state == "firing" and verdict.stormed[row_of[name]]:
                ended |= {name, *parents(name, {})}  # as detect_retry_storms: a pair's marks its feature, customer
        stormed |= {row_of[name]: t for name in ended if name in row_of}
    return out


STEP_MINUTES = 5
PERIOD_MINUTES = int(FEATURE_FAILURES.step.total_seconds() // 60)  # feature_failures' periods (feature_windows)


def peers(a: np.ndarray, f: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """(subjects, providers): what the other traffic failed at on each provider in the minutes of the subject's
    attempts, each minute's ratio weighted by its attempts in it, as ``fast_window`` reads it. ``a``, ``f``:
    attempts and failed attempts per subject, provider and minute of the window; the providers' totals sum the
    ``counted`` subjects, less the subject's own (``RetryStormRule.expected_ratio``)."""
    a, f = a.astype(np.float64), f.astype(np.float64)
    others_a = a[counted].sum(axis=0)[None] - a
    others_f = np.maximum(f[counted].sum(axis=0)[None] - f, 0.0)
    ratio = np.where(others_a > 0, others_f / np.maximum(others_a, 1), 0.0)
    tried = a.sum(axis=2)
    return np.where(tried > 0, (a * ratio).sum(axis=2) / np.maximum(tried, 1), 0.0)


def guard(split, failed: np.ndarray, attempts: np.ndarray, w: int, minutes: int | None, features: np.ndarray) -> dict:
    """The window a slow burn must still fail in: ``minutes`` for features, the fast window for customers."""
    if minutes is None:
        return {}
    pick = features[:, None]
    return {"now_failed": np.where(pick, split(failed, minutes), split(failed, w)),
            "now_attempts": np.where(pick, split(attempts, minutes), split(attempts, w))}


def _record(out: list[Fired], open_: dict[int, Incident], key: int, incident: Incident | None,
            transition: str | None, t: int, world: World, before: Incident | None) -> None:
    if transition == "firing":  # an incident already firing that fires again has escalated: not a new alert
        # (unless it was stored as part of another incident, undelivered: detached, it is delivered now)
        escalated = before is not None and before.state == "firing" and not (before.root and not incident.root)
        out.append(Fired("noise", incident.kind, incident.subject, t, "escalated" if escalated else "firing",
                         incident.severity, int((incident.opened_at - EPOCH).total_seconds() // 60), incident.root))
    elif transition == "resolved":
        out.append(Fired("noise", before.kind, before.subject, t, "resolved", before.severity,
                         int((before.opened_at - EPOCH).total_seconds() // 60), before.root))
    if incident is None:
        open_.pop(key, None)
    else:
        open_[key] = incident


def messages(world: World, fired: list[Fired]) -> dict[str, float]:
    """Messages per destination per day under the documented routes, through the package's routing and digest:
    Slack takes every alert (digested to its hourly budget), on-call (PagerDuty) what fired at ``error`` or worse,
    and the resolves of those (a resolve goes where its trigger went)."""
    days = (world.minutes - EVAL_START) / DAY
    alerts = [Alert(kind=f.kind, severity=f.severity, state=f.state, subject=f.subject, window_start=at(f.minute),
                    window_end=at(f.minute), dedup_key=f"{f.kind}:{f.subject}:{f.onset if f.onset >= 0 else f.minute}",
                    message="", created_at=at(f.minute)) for f in fired if f.state != "escalated" and not f.part_of]
    # an escalated trigger replaces its stored trigger: a destination that had it is not sent it again, one whose
    # route only takes the worse severity (on-call) gets it now, and the resolve follows it there
    escalated = {f"{f.kind}:{f.subject}:{f.onset if f.onset >= 0 else f.minute}": f.severity
                 for f in fired if f.state == "escalated" and not f.part_of}
    by_pass: dict[datetime, list[Alert]] = {}
    for alert in alerts:
        by_pass.setdefault(alert.created_at, []).append(alert)
    slack = digest.simulate(sorted(by_pass.items()))
    triggers = {a.dedup_key: a.model_copy(update={"severity": escalated.get(a.dedup_key, a.severity)})
                for a in alerts if a.state == "firing"}
    paged = sum(digest.route_as(triggers.get(a.dedup_key, a) if a.state == "firing" else a, triggers).severity
                in ("error", "critical") for a in alerts)
    return {"slack (every alert, digest)": slack / days, "on-call (error and up, with resolves)": paged / days}


def messages_per_incident(world: World, fired: list[Fired]) -> dict[str, list[int]]:
    """Per destination, the messages each injected incident (with any) got under the documented routes: Slack a
    trigger and its resolve per delivered dedup key (before any digest, which can only merge them), on-call a
    trigger once its severity (escalated or not) is ``error`` or worse, and then its resolve. A dedup key counts
    for the incident its trigger is true for (:func:`.score.true_incident`); attached alerts are not delivered."""
    from bench.detector_eval.score import true_incident

    delivered = [f for f in fired if not f.part_of]
    key = lambda f: (f.kind, f.subject, f.onset if f.onset >= 0 else f.minute)  # noqa: E731
    owner: dict[tuple, int] = {}
    paged: set[tuple] = set()
    counts: dict[str, dict[int, int]] = {"slack": {}, "on-call": {}}

    def add(dest: str, incident: int) -> None:
        counts[dest][incident] = counts[dest].get(incident, 0) + 1

    for f in delivered:
        if f.state == "firing":
            found = true_incident(world, f)
            if found is None:
                continue
            owner[key(f)] = id(found)
            add("slack", id(found))
        if key(f) not in owner:
            continue
        if f.state in ("firing", "escalated") and f.severity in ("error", "critical") and key(f) not in paged:
            paged.add(key(f))
            add("on-call", owner[key(f)])
        elif f.state == "resolved":
            add("slack", owner[key(f)])
            if key(f) in paged:
                add("on-call", owner[key(f)])
    return {dest: sorted(per.values()) for dest, per in counts.items()}
