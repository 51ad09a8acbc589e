"""One round of the alerting work — detect, store, deliver — as `spendstream notify` and the worker group's
leader both run it.

Detection (the hourly baselines, then budgets, retry storms, spend anomalies, cost drift) stores each new
alert in ``alerts``, the outbox. Budgets and retry storms read rollups: the round computes their watermarks
once, after the baselines, and hands them to both (:func:`~spendstream.detect.pass_marks.pass_marks`); retry storms
and spend anomalies read this hour's baselines, whose hour the round finds once too
(:func:`~spendstream.detect.baseline.newest_hour`), and both read the last minutes of raw events from one copy the
round makes when the first asks and drops at its end (:mod:`spendstream.detect.raw_window`). The
baselines are re-learned once an hour; a long-running cycle (the worker's leader, ``notify`` without
``--once``) only starts that refresh, beside the round (:mod:`spendstream.alerting.refresher`), and the round's
detectors use the newest stored baselines meanwhile; a single round (``notify --once``) runs it first, so it
is complete. Delivery (:class:`~spendstream.alerting.delivery.Notifier`) then sends what each destination has
not settled. Detection runs without destinations too: the alerts are stored, readable with SQL and delivered once
routes exist. A detector that fails costs its own alerts for this round, not the other detectors' nor
the delivery of what is already stored.

Both steps are safe to repeat and to run twice at once: an alert is stored once per (dedup key,
state) (the table collapses a copy two runners raced to insert), and a delivery already settled
in ``alert_deliveries`` is not sent again. Two runners can still both *send* a delivery that
neither has settled yet; the worker prevents that for a leader handover (agents/leadership.py),
which is why ``may_send`` exists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path

from spendstream.alerting.delivery import AlertRouting, Notifier, PassReport, load_routing, store_new_alerts
from spendstream.alerting.refresher import BackgroundRefresh
from spendstream.detect import raw_window
from spendstream.detect.anomaly import detect_spend_anomalies
from spendstream.detect.baseline import newest_hour
from spendstream.detect.baseline import refresh as refresh_baselines
from spendstream.detect.budgets import Budget, evaluate, load_budgets
from spendstream.detect.cost_drift import CostDriftDetector, detect_cost_drift
from spendstream.detect.pass_marks import pass_marks
from spendstream.detect.retry_storm import detect_retry_storms
from spendstream.detect.spend import SpendAnomalyRule
from spendstream.detect.storm import RetryStormRule
from spendstream.schemas.alert import Alert
from spendstream.settings import Settings
from spendstream.sinks.store import Store

log = logging.getLogger(__name__)

# the raw minutes retry storms and spend anomalies read (their fast windows, as the round runs their rules)
FAST_WINDOW = timedelta(minutes=max(RetryStormRule().window_minutes, SpendAnomalyRule().window_minutes))


@dataclass(frozen=True, slots=True)
class AlertingConfig:
    """What to watch (budgets) and where alerts go (routes); empty means detection only, nothing delivered."""

    routing: AlertRouting = field(default_factory=AlertRouting)
    budgets: tuple[Budget, ...] = ()
    cost_drift: CostDriftDetector = field(default_factory=CostDriftDetector)

    @classmethod
    def load(cls, *, routes_file: Path | None, budgets_file: Path | None,
             cost_drift: CostDriftDetector | None = None) -> AlertingConfig:
        """Read both files; :class:`~spendstream.configfile.ConfigFileError` names the file, line and field
        of a mistake."""
        return cls(load_routing(routes_file), tuple(load_budgets(budgets_file)), cost_drift or CostDriftDetector())

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertingConfig:
        """The files and tolerances ``settings`` name (SPENDSTREAM_ALERT_ROUTES, _BUDGETS_FILE, _COST_DRIFT_*)."""
        return cls.load(routes_file=settings.alert_routes, budgets_file=settings.budgets_file,
                        cost_drift=CostDriftDetector(relative=settings.cost_drift_relative,
                                                     absolute_usd=settings.cost_drift_absolute_usd))

    def problems(self) -> dict[str, str]:
        """Destinations that cannot work as configured, with why (no secret quoted): their deliveries are marked
        failed while the others are served."""
        return {d.name: problem for d in self.routing.destinations if (problem := d.problem()) is not None}


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one round did: alerts newly stored, detectors that failed (name -> error), and the delivery pass
    (None when no destination is configured)."""

    raised: int
    detector_errors: dict[str, str]
    delivery: PassReport | None
    detect_s: float = 0.0  # how long detection took, storing its alerts included (delivery not)


class AlertCycle:
    """Runs rounds of detection and delivery against ``store``; keep one per process (the notifier remembers
    requests that overran a pass, so they are not piled on, and the background refresh runs one at a time).

    With ``refresh_in_background`` a round starts the hourly baseline refresh on a thread and does not wait
    for it (:class:`~spendstream.alerting.refresher.BackgroundRefresh`); without, it runs the refresh first."""

    def __init__(self, store: Store, config: AlertingConfig, *, pass_deadline_s: float,
                 request_timeout_s: float = 10.0, may_send: Callable[[], bool] = lambda: True,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 refresh_in_background: bool = False, refresher: BackgroundRefresh | None = None) -> None:
        self.store, self.config, self.clock = store, config, clock
        self.refresher = refresher or (BackgroundRefresh(store) if refresh_in_background else None)
        self.notifier = (Notifier(store, config.routing, pass_deadline_s=pass_deadline_s,
                                  request_timeout_s=request_timeout_s, may_send=may_send, clock=clock)
                         if config.routing.destinations else None)

    def run(self) -> CycleReport:
        """One detection round, then (with destinations) one delivery pass bounded by ``pass_deadline_s``.

        Raises only what the store raises while storing alerts or reading the outbox; a detector's failure is
        logged and reported instead."""
        started, now = time.monotonic(), self.clock()
        budgets = list(self.config.budgets)
        # once per round, when the first detector asks (after the baselines: not minutes stale); a failure
        # is each asking detector's error, as its own watermark statement's would be
        marks = cache(lambda: pass_marks(self.store, budgets))
        # the hour whose baselines storms and spend use, probed once when the first asks (after the baselines)
        hour = cache(lambda: newest_hour(self.store, now))
        # the fast windows' raw events, copied once when the first asks (after the baselines) and dropped below
        raw = cache(lambda: raw_window.read(self.store, start=now - FAST_WINDOW, end=now))
        detectors: dict[str, Callable[[], list[Alert]]] = {
            # once an hour: what the two below expect (without it they use the last hour's, then nothing)
            "baselines": (lambda: self._refresh_beside(now)) if self.refresher else (
                lambda: _no_alerts(refresh_baselines(self.store, now))),
            "budgets": lambda: evaluate(self.store, budgets, now, marks=marks()),
            "retry storms": lambda: detect_retry_storms(self.store, now, marks=marks(), hour=hour(), raw=raw()),
            "spend anomalies": lambda: detect_spend_anomalies(self.store, now, hour=hour(), raw=raw()),
            "cost drift": lambda: detect_cost_drift(self.store, now, self.config.cost_drift),
        }
        alerts: list[Alert] = []
        errors: dict[str, str] = {}
        try:
            for name, detect in detectors.items():
                try:
                    alerts.extend(detect())
                except Exception as exc:  # a bug or a failed query in one detector must not silence the others
                    log.error("detector %s failed; its alerts are missing from this round", name, exc_info=True)
                    errors[name] = f"{type(exc).__name__}: {exc}"
        finally:
            if raw.cache_info().currsize:
                raw_window.drop(self.store, raw())
        raised = store_new_alerts(self.store, alerts)
        detect_s = time.monotonic() - started
        return CycleReport(raised, errors, self.notifier.run_pass() if self.notifier else None, detect_s)


    def _refresh_beside(self, now: datetime) -> list[Alert]:
        """Start this hour's refresh unless it runs or is done; a failure of the last one is this round's error."""
        assert self.refresher is not None
        failed = self.refresher.failure()
        self.refresher.start(now)  # again after a failure: this round reports it, the refresh is tried anew
        if failed is not None:
            raise failed
        return []


def _no_alerts(_: object) -> list[Alert]:
    return []
