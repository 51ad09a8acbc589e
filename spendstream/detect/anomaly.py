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
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from spendstream.schemas.alert import Alert
from spendstream.sinks.store import TextQuerier, query_result, sql_time

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


def detect_spend_anomalies(querier: TextQuerier, now: datetime,
                           detector: SpendAnomalyDetector | None = None) -> list[Alert]:
    """New anomalies and ended ones, for every team, feature and customer."""
    detector = detector or SpendAnomalyDetector()
    starts = [now - detector.window] + [now - detector.window - back for back in LOOKBACKS]
    params = {f"s{i}": sql_time(s) for i, s in enumerate(starts)} | {
        f"e{i}": sql_time(s + detector.window) for i, s in enumerate(starts)}
    sums = ", ".join(
        f"sumIf(total_cost, ts >= {{s{i}:DateTime64(3, 'UTC')}} AND ts < {{e{i}:DateTime64(3, 'UTC')}}) AS w{i}, "
        f"countIf(ts >= {{s{i}:DateTime64(3, 'UTC')}} AND ts < {{e{i}:DateTime64(3, 'UTC')}}) AS n{i}"
        for i in range(len(starts)))
    params["oldest"] = sql_time(min(starts))
    rows = query_result(querier, f"""
        SELECT key, toString(min(ts)) AS first_seen, {sums} FROM (
            SELECT arrayJoin([concat('team=', ifNull(team, '')), concat('feature=', ifNull(feature, '')),
                              concat('customer=', ifNull(customer, ''))]) AS key, ts, total_cost
            FROM usage_events FINAL
            WHERE priced AND ts >= {{oldest:DateTime64(3, 'UTC')}})
        WHERE NOT endsWith(key, '=')
        GROUP BY key""", params).dicts()
    firing = {r[0]: datetime.fromisoformat(r[1]).replace(tzinfo=now.tzinfo) for r in query_result(querier, """
        SELECT subject, toString(argMax(window_start, created_at)) FROM alerts FINAL WHERE kind = 'spend_anomaly'
        GROUP BY subject HAVING argMax(state, created_at) = 'firing'""").rows}
    alerts = []
    for row in rows:
        # a lookback window before the key's first event is unknown (None), not 0
        first_seen = datetime.fromisoformat(row["first_seen"]).replace(tzinfo=now.tzinfo)
        history = [float(row[f"w{i}"] or 0) if starts[i] + detector.window > first_seen else None
                   for i in range(1, len(starts))]
        alert = detector.evaluate(row["key"], float(row["w0"] or 0), history, firing.get(row["key"]), now)
        if alert is not None:
            alerts.append(alert)
    return alerts
