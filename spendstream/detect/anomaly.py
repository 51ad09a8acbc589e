"""Spend anomalies: a key spending far more than it does at this time of day and week.

The baseline knows time of day and week without needing a model: it is the median
of the key's spend in the same ``window`` at the same time 1, 2, 3 and 4 weeks ago
and 1 and 2 days ago (whichever exist). A key fires when its spend in the last
``window`` is at least ``factor`` × that baseline (the baseline is floored at
``min_baseline``, so a key that is usually silent does not page on its first
dollar) and at least ``min_spend``; it resolves when spend is back under
``resolve_factor`` × the baseline. Keys are ``team=…``, ``feature=…`` and
``customer=…``.

Evaluated by ``spendstream notify`` on windows read from ClickHouse (each event
once); ``bench/alert_eval.py`` measures recall, precision and delay on replayed
traffic with injected incidents, beside the LiteLLM-style rule.

Reads (:func:`spend_windows`, through :mod:`spendstream.detect.windows`): team and
feature windows from the minute rollup; customer windows from raw (only
``customer_hours`` keeps customers, and a window shorter than an hour holds no whole
hour); whether a key had spent before each lookback window from ``customer_hours`` —
four weeks of it, the part of a pass that grows with traffic.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from spendstream.detect.windows import Window, windowed
from spendstream.schemas.alert import Alert
from spendstream.sinks import rollups
from spendstream.sinks.store import TextQuerier, query_result

LOOKBACKS = (timedelta(days=7), timedelta(days=14), timedelta(days=21), timedelta(days=28), timedelta(days=1),
             timedelta(days=2))


@dataclass(frozen=True)
class SpendAnomalyDetector:
    window: timedelta = timedelta(minutes=10)
    factor: float = 3.0
    resolve_factor: float = 1.5
    min_spend: float = 1.0       # USD in the window: tiny keys do not page
    min_baseline: float = 0.25   # USD in the window

    def baseline(self, history: list[float | None]) -> float | None:
        seen = [h for h in history if h is not None]
        return statistics.median(seen) if seen else None

    def firing(self, observed: float, baseline: float | None) -> bool:
        expected = max(baseline if baseline is not None else 0.0, self.min_baseline)
        return observed >= self.min_spend and observed >= self.factor * expected

    def calm(self, observed: float, baseline: float | None) -> bool:
        return observed < self.resolve_factor * max(baseline or 0.0, self.min_baseline)

    def evaluate(self, key: str, observed: float, history: list[float | None], firing_since: datetime | None,
                 now: datetime) -> Alert | None:
        baseline = self.baseline(history)
        if firing_since is None and self.firing(observed, baseline):
            return self._alert(key, observed, baseline, "firing", now - self.window, now)
        if firing_since is not None and self.calm(observed, baseline):
            return self._alert(key, observed, baseline, "resolved", firing_since, now)
        return None

    def _alert(self, key: str, observed: float, baseline: float | None, state: str, since: datetime,
               now: datetime) -> Alert:
        minutes = int(self.window.total_seconds() // 60)
        usual = f"${baseline:.2f}" if baseline is not None else "nothing (no history)"
        message = (f"${observed:.2f} in the last {minutes} min, usually {usual} at this time of day and week"
                   if state == "firing" else f"back to ${observed:.2f} in {minutes} min (usually {usual})")
        return Alert(kind="spend_anomaly", severity="warning" if state == "firing" else "info", state=state,
                     subject=key, window_start=since, window_end=now, observed=Decimal(f"{observed:.6f}"),
                     expected=Decimal(f"{baseline:.6f}") if baseline is not None else None,
                     dedup_key=f"spend_anomaly:{key}:{since:%Y-%m-%dT%H:%M}", message=message, created_at=now)


@dataclass(frozen=True, slots=True)
class KeySpend:
    """What the detector sees of one key (``team=…``, ``feature=…``, ``customer=…``)."""

    key: str
    observed: Decimal                     # priced spend in the last window
    history: tuple[Decimal | None, ...]   # the same window at each of LOOKBACKS; None: it ended before the key's
                                          # first priced event since the oldest window's start (unknown, not 0)


def detect_spend_anomalies(querier: TextQuerier, now: datetime,
                           detector: SpendAnomalyDetector | None = None) -> list[Alert]:
    """New anomalies and ended ones, for every team, feature and customer."""
    detector = detector or SpendAnomalyDetector()
    firing = {r[0]: datetime.fromisoformat(r[1]).replace(tzinfo=now.tzinfo) for r in query_result(querier, """
        SELECT subject, toString(argMax(window_start, created_at)) FROM alerts FINAL WHERE kind = 'spend_anomaly'
        GROUP BY subject HAVING argMax(state, created_at) = 'firing'""").rows}
    alerts = []
    for spend in spend_windows(querier, now, window=detector.window):
        history = [float(h) if h is not None else None for h in spend.history]
        alert = detector.evaluate(spend.key, float(spend.observed), history, firing.get(spend.key), now)
        if alert is not None:
            alerts.append(alert)
    return alerts


_KEYS = {"team": "concat('team=', ifNull(team, ''))", "feature": "concat('feature=', ifNull(feature, ''))",
         "customer": "concat('customer=', ifNull(customer, ''))"}
_NEVER = "toUInt8(255)"  # the span of a key with no priced event in any


def spend_windows(querier: TextQuerier, now: datetime, *, window: timedelta) -> list[KeySpend]:
    """Every key with a priced event since the oldest lookback window's start, with its windows, by key.

    The same numbers, to the last digit, as summing raw ``FINAL`` rows over each window
    (``[start, end)`` at the millisecond).
    """
    starts = [now - window] + [now - window - back for back in LOOKBACKS]
    windows = [Window(start, start + window) for start in starts]
    # Whether a key had spent before a lookback window ended: the first of the spans between the
    # windows' ends (from the oldest start on, the last one open) with a priced attempt of the key;
    # a key is one with any. An end is rounded up to the millisecond: a DateTime64(3) `ts` is
    # before the instant `end` iff it is before that. (Grouping sets: one kind of key per set,
    # the other two come out empty, or NULL with group_by_use_nulls.)
    ends = [_ceil_millisecond(start + window) for start in starts[1:]]
    bounds = sorted(set(ends))
    spans = [Window(a, b) for a, b in zip([min(starts), *bounds], [*bounds, None], strict=True)]
    by_minute, p1 = windowed(rollups.MINUTES, windows, ["cost_usd"], name="m")
    by_hour, p2 = windowed(rollups.CUSTOMER_HOURS, windows, ["cost_usd"], name="h")
    seen, p3 = windowed(rollups.CUSTOMER_HOURS, spans, ["attempts", "unpriced_attempts"], name="s")
    spend = ", ".join(f"sumIf(cost, w = {i}) AS w{i}" for i in range(len(windows)))
    rows = query_result(querier, f"""
        SELECT key, {spend}, min(first) AS first_span FROM (
            SELECT arrayJoin([{_KEYS["team"]}, {_KEYS["feature"]}]) AS key, w, cost_usd AS cost, {_NEVER} AS first
            FROM {by_minute}
            UNION ALL SELECT {_KEYS["customer"]}, w, cost_usd, {_NEVER} FROM {by_hour}
            UNION ALL SELECT concat(ifNull(tk, ''), ifNull(fk, ''), ifNull(ck, '')), {_NEVER},
                             CAST(NULL, '{rollups.MONEY}'), first
            FROM (SELECT {_KEYS["team"]} AS tk, {_KEYS["feature"]} AS fk, {_KEYS["customer"]} AS ck, min(w) AS first
                  FROM {seen} WHERE attempts > unpriced_attempts GROUP BY GROUPING SETS ((tk), (fk), (ck))))
        WHERE NOT endsWith(key, '=')
        GROUP BY key HAVING first_span != {_NEVER}
        ORDER BY key""", p1 | p2 | p3).dicts()
    return [KeySpend(key=r["key"], observed=r["w0"] or Decimal(0),
                     history=tuple((r[f"w{i}"] or Decimal(0)) if r["first_span"] <= bounds.index(end) else None
                                   for i, end in enumerate(ends, start=1)))
            for r in rows]


def _ceil_millisecond(at: datetime) -> datetime:
    floor = at.replace(microsecond=at.microsecond // 1000 * 1000)
    return floor if floor == at else floor + timedelta(milliseconds=1)
