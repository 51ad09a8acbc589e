"""Cost drift: the provider's own cost of a model's calls and the computed one disagree.

An event may carry what the provider (or a gateway) says it cost (``provider_cost_usd``,
stored as the exact ``provider_cost`` beside the computed ``total_cost``). Where both
are known they should agree: a gap means a price the catalog or the overrides have
wrong (a negotiated discount missing, a tier not seen, a price change), or a provider
that bills more than its list. Whichever is billed (``SPENDSTREAM_BILLING_POLICY``),
someone has to look.

Per provider and model, over the last ``window``, the detector compares the sums of
both costs over the events that have both. It fires when they differ by more than
``absolute_usd`` *and* by more than ``relative`` × the larger sum (as ``math.isclose``
decides closeness), and resolves when a later window has such events and they agree.
A window without any leaves an incident as it is: no evidence is not agreement.
One incident per subject: while one fires, no other is raised for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from spendstream.schemas.alert import Alert
from spendstream.sinks.store import TextQuerier, query_result, sql_time

KIND = "cost_drift"


@dataclass(frozen=True, slots=True)
class ModelCosts:
    """One provider/model's events of a window that carry both costs."""

    provider: str
    model: str
    events: int
    computed: Decimal
    reported: Decimal

    @property
    def subject(self) -> str:
        return f"provider={self.provider} model={self.model}"

    @property
    def gap(self) -> Decimal:
        return self.reported - self.computed


@dataclass(frozen=True, slots=True)
class CostDriftDetector:
    relative: float = 0.02
    absolute_usd: Decimal = Decimal("0.01")
    window: timedelta = timedelta(hours=1)

    def drifts(self, costs: ModelCosts) -> bool:
        gap = abs(costs.gap)
        larger = max(abs(costs.computed), abs(costs.reported))
        return gap > self.absolute_usd and gap > Decimal(str(self.relative)) * larger

    def evaluate(self, costs: ModelCosts | None, firing_since: datetime | None, now: datetime) -> Alert | None:
        """The alert to store for one subject now, if any: a new incident, or the end of the open one."""
        if costs is None or costs.events == 0:
            return None
        drifting = self.drifts(costs)
        if drifting and firing_since is None:
            return self._alert(costs, "firing", now - self.window, now)
        if not drifting and firing_since is not None:
            return self._alert(costs, "resolved", firing_since, now)
        return None

    def _alert(self, costs: ModelCosts, state: str, since: datetime, now: datetime) -> Alert:
        minutes = int(self.window.total_seconds() // 60)
        direction = "more" if costs.gap > 0 else "less"
        reported, computed, gap = _usd(costs.reported), _usd(costs.computed), _usd(abs(costs.gap))
        message = (
            f"the provider reported ${reported} for {costs.events} call(s) in the last {minutes} min, "
            f"${gap} {direction} than computed (${computed}); check the price that applied "
            "(`spendstream prices show`) or the overrides file, then `spendstream reprice`"
            if state == "firing" else
            f"provider-reported and computed cost agree again: ${reported} vs ${computed} for "
            f"{costs.events} call(s) in the last {minutes} min")
        return Alert(kind=KIND, severity="warning" if state == "firing" else "info", state=state,
                     subject=costs.subject, window_start=since, window_end=now, observed=costs.reported,
                     expected=costs.computed, dedup_key=f"{KIND}:{costs.provider}/{costs.model}:{since:%Y-%m-%dT%H:%M}",
                     message=message, created_at=now)


def _usd(amount: Decimal) -> str:
    """An exact amount without the trailing zeros of its Decimal(38, 18) column."""
    text = f"{amount:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def detect_cost_drift(querier: TextQuerier, now: datetime, detector: CostDriftDetector | None = None) -> list[Alert]:
    """Alerts to store now: new drift incidents, and incidents whose costs agree again."""
    detector = detector or CostDriftDetector()
    params = {"start": sql_time(now - detector.window), "now": sql_time(now)}
    # Read from raw: the rollups do not keep the provider's cost, and this is one window of a
    # table sorted by time.
    windows = {(r["provider"], r["model"]): ModelCosts(**r) for r in query_result(querier, """
        SELECT provider, model, toInt64(count()) AS events, sum(total_cost) AS computed,
               sum(provider_cost) AS reported
        FROM usage_events FINAL
        WHERE ts >= {start:DateTime64(3, 'UTC')} AND ts < {now:DateTime64(3, 'UTC')}
          AND provider_cost IS NOT NULL AND total_cost IS NOT NULL
        GROUP BY provider, model""", params).dicts()}
    firing = {r[0]: datetime.fromisoformat(r[1]).replace(tzinfo=now.tzinfo) for r in query_result(querier, f"""
        SELECT subject, toString(argMax(window_start, created_at)) FROM alerts FINAL WHERE kind = '{KIND}'
        GROUP BY subject HAVING argMax(state, created_at) = 'firing'""").rows}
    alerts = []
    for costs in sorted(windows.values(), key=lambda c: c.subject):
        alert = detector.evaluate(costs, firing.get(costs.subject), now)
        if alert is not None:
            alerts.append(alert)
    return alerts
