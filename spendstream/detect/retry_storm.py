"""Retry storms: a feature suddenly retrying far more than it usually does, and what that costs.

Evaluated every time ``spendstream notify`` looks at the outbox, on per-feature
aggregates read from ClickHouse — which holds each event once, so a re-delivered
batch can never make a storm. The detector itself is pure: it sees the last
``window`` minutes of a feature, the feature's own retry ratio over the previous
day, and whether an alert is already firing, and answers with an alert or None.

Fires when, in the window, there are at least ``min_retries`` retries and the
retry ratio is at least ``factor`` × the feature's baseline (and at least
``min_ratio``), or one logical request reached ``max_attempts`` attempts. Resolves
when the ratio is back under ``resolve_factor`` × baseline. The alert names the
feature, the retries, the error mix (429, 5xx, timeouts, invalid output) and the
dollars spent on failed attempts so far.

Reads: the last ``window`` from raw ``usage_events FINAL`` (its error mix counts
429s and 5xx by HTTP status, which the rollups do not keep; it is minutes of a
table sorted by time), and the previous day's retry ratio, the larger read, from
the minute rollup (:mod:`spendstream.detect.windows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from spendstream.detect.windows import Window, windowed
from spendstream.schemas.alert import Alert
from spendstream.sinks import rollups
from spendstream.sinks.store import TextQuerier, query_result, sql_time


@dataclass(frozen=True, slots=True)
class FeatureWindow:
    feature: str
    attempts: int
    retries: int
    rate_limited: int
    server_errors: int
    timeouts: int
    invalid_outputs: int
    failed_cost: Decimal
    max_attempt: int

    @property
    def ratio(self) -> float:
        return self.retries / self.attempts if self.attempts else 0.0


@dataclass(frozen=True)
class RetryStormDetector:
    window: timedelta = timedelta(minutes=5)
    min_retries: int = 20
    factor: float = 3.0
    min_ratio: float = 0.10
    resolve_factor: float = 1.5
    max_attempts: int = 6

    def evaluate(self, w: FeatureWindow, baseline_ratio: float, firing_since: datetime | None,
                 now: datetime) -> Alert | None:
        threshold = max(self.factor * baseline_ratio, self.min_ratio)
        storming = (w.retries >= self.min_retries and w.ratio >= threshold) or w.max_attempt >= self.max_attempts
        if storming and firing_since is None:
            return self._alert(w, baseline_ratio, "firing", now - self.window, now)
        calm = (w.ratio < max(self.resolve_factor * baseline_ratio, self.min_ratio / 2)
                and w.max_attempt < self.max_attempts)
        if firing_since is not None and calm:
            return self._alert(w, baseline_ratio, "resolved", firing_since, now)
        return None

    def _alert(self, w: FeatureWindow, baseline: float, state: str, since: datetime, now: datetime) -> Alert:
        mix = (f"{w.rate_limited} rate-limited (429), {w.server_errors} server errors (5xx), {w.timeouts} timeouts, "
               f"{w.invalid_outputs} invalid outputs")
        what = (f"{w.retries} retries in {w.attempts} attempts ({w.ratio:.0%}, usually {baseline:.0%}) in the last "
                f"{self.window.seconds // 60} min; longest request {w.max_attempt} attempts; {mix}; "
                f"${w.failed_cost:.2f} spent on failed attempts" if state == "firing" else
                f"retries back to {w.ratio:.0%} (usually {baseline:.0%}) in the last {self.window.seconds // 60} min")
        return Alert(kind="retry_storm", severity="error" if state == "firing" else "info", state=state,
                     subject=f"feature={w.feature}", window_start=since, window_end=now,
                     observed=Decimal(str(round(w.ratio, 4))), expected=Decimal(str(round(baseline, 4))),
                     dedup_key=f"retry_storm:{w.feature}:{since:%Y-%m-%dT%H:%M}", message=what, created_at=now)


def detect_retry_storms(querier: TextQuerier, now: datetime,
                        detector: RetryStormDetector | None = None) -> list[Alert]:
    """Alerts to store now: new storms, and storms that ended."""
    detector = detector or RetryStormDetector()
    params = {"start": sql_time(now - detector.window), "now": sql_time(now)}
    windows = {r["feature"]: FeatureWindow(**r) for r in query_result(querier, """
        SELECT feature, toInt64(count()) AS attempts, toInt64(countIf(attempt > 1)) AS retries,
               toInt64(countIf(status = 'rate_limited' OR http_status = 429)) AS rate_limited,
               toInt64(countIf(http_status >= 500)) AS server_errors,
               toInt64(countIf(status = 'timeout')) AS timeouts,
               toInt64(countIf(status = 'invalid_output')) AS invalid_outputs,
               sumIf(ifNull(total_cost, 0), status != 'ok') AS failed_cost,
               toInt64(max(attempt)) AS max_attempt
        FROM usage_events FINAL
        WHERE ts >= {start:DateTime64(3, 'UTC')} AND ts < {now:DateTime64(3, 'UTC')} AND feature IS NOT NULL
        GROUP BY feature""", params).dicts()}
    baselines = retry_baselines(querier, start=now - detector.window - timedelta(days=1),
                                end=now - detector.window)
    firing = {r[0].removeprefix("feature="): datetime.fromisoformat(r[1]).replace(tzinfo=now.tzinfo)
              for r in query_result(querier, """
        SELECT subject, toString(argMax(window_start, created_at)) FROM alerts FINAL WHERE kind = 'retry_storm'
        GROUP BY subject HAVING argMax(state, created_at) = 'firing'""").rows}
    alerts = []
    for feature in sorted(windows.keys() | firing.keys()):
        window = windows.get(feature) or FeatureWindow(feature, 0, 0, 0, 0, 0, 0, Decimal(0), 0)
        alert = detector.evaluate(window, baselines.get(feature, 0.0), firing.get(feature), now)
        if alert is not None:
            alerts.append(alert)
    return alerts


def retry_baselines(querier: TextQuerier, *, start: datetime, end: datetime) -> dict[str, float]:
    """Each feature's retries per attempt in ``[start, end)``, as raw ``FINAL`` answers it, from the minute rollup."""
    day, params = windowed(rollups.MINUTES, [Window(start, end)], ["attempts", "retries"], name="day",
                           where="feature IS NOT NULL")
    return {r[0]: float(r[1]) for r in query_result(
        querier, f"SELECT feature, sum(retries) / sum(attempts) FROM {day} GROUP BY feature", params).rows}
