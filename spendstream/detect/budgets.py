"""Budgets: spend per team, feature or customer against a daily or monthly amount.

A budgets file (``SPENDSTREAM_BUDGETS_FILE``)::

    budgets:
      - name: search-monthly
        team: search                # or feature: / customer: (one of them), or none for all spend
        period: monthly             # calendar month, or daily
        amount_usd: 5000
        thresholds: [50, 80, 90, 100]   # the default
        timezone: Europe/Berlin     # where the period starts and ends (default UTC)

``spendstream notify`` evaluates every budget each time it looks at the outbox:
each threshold crossed in a period raises one ``budget_burn`` alert (its dedup key
names the budget, the period and the threshold, so it fires once per period), with
the spend so far and a forecast of when the budget runs out at the period's burn rate.

Passes run every few minutes, so a crossing in a period's last minutes (23:59 of a
daily budget) is first seen by a pass in the *next* period. Each pass therefore also
evaluates the period that closed less than :data:`CLOSED_PERIOD_GRACE` ago, over the
whole of it: such a crossing is alerted by the first pass after the boundary (with the
same dedup key a pass inside the period would have given it, so one already alerted is
not alerted again), and so are events of that period that arrive late within the grace.

The spend is read from the rollups (:func:`spend_in`, through
:func:`~spendstream.detect.windows.layered`): the period's closed days from a day rollup
(``team_days``, ``feature_days``, ``customer_days``), the days after its watermark (today, a
day a late event reopened) from an hour rollup (``usage_hours``, ``customer_provider_hours``), and the
partial hours at the window's ends from raw: a pass reads about a day, not a month.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spendstream.configfile import known_zone, load_model
from spendstream.detect.windows import Ask, Window, layered
from spendstream.schemas.alert import Alert, Severity
from spendstream.sinks import rollups, shapes
from spendstream.sinks.store import TextQuerier, query_result

_SEVERITY: list[tuple[int, Severity]] = [(100, "critical"), (90, "error"), (80, "warning"), (0, "info")]


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    team: str | None = None
    feature: str | None = None
    customer: str | None = None
    period: Literal["daily", "monthly"] = "monthly"
    amount_usd: Decimal = Field(gt=0)
    thresholds: list[int] = Field(default_factory=lambda: [50, 80, 90, 100])
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_zone(value)

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, values: list[int]) -> list[int]:
        if not values or any(not 0 < v <= 1000 for v in values):
            raise ValueError("thresholds are percentages between 1 and 1000")
        return sorted(set(values))

    @model_validator(mode="after")
    def _one_scope(self) -> Budget:
        if sum(v is not None for v in (self.team, self.feature, self.customer)) > 1:
            raise ValueError("a budget is for one team, feature or customer (or, with none, for all spend)")
        return self

    @property
    def scope(self) -> tuple[str, str] | None:
        for column in ("team", "feature", "customer"):
            if getattr(self, column) is not None:
                return column, getattr(self, column)
        return None

    def period_of(self, now: datetime) -> tuple[datetime, datetime]:
        """The current period [start, end) in UTC, with calendar boundaries in the budget's time zone."""
        local = now.astimezone(ZoneInfo(self.timezone))
        if self.period == "daily":
            start = local.replace(hour=0, minute=0, second=0, microsecond=0)
            end = (start + timedelta(days=1, hours=2)).replace(hour=0)  # through DST changes
        else:
            start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            end = (start + timedelta(days=32)).replace(day=1, hour=0)
        return start.astimezone(timezone.utc), end.replace(tzinfo=ZoneInfo(self.timezone)).astimezone(timezone.utc)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budgets: list[Budget] = Field(default_factory=list)


def load_budgets(path: str | Path | None) -> list[Budget]:
    if path is None:
        return []
    parsed, _ = load_model(Path(path), _File, "budgets file")
    return parsed.budgets if parsed else []


def layers_of(budgets: Sequence[Budget]) -> tuple[rollups.Rollup, ...]:
    """The rollups :func:`spend_in` reads for ``budgets`` (whose watermarks it needs), each once."""
    layers = (layer for budget in budgets for layer in _LAYERS[budget.scope[0] if budget.scope else None])
    return tuple({layer.name: layer for layer in layers}.values())


def spend_so_far(querier: TextQuerier, budgets: Sequence[Budget], now: datetime) -> list[Decimal]:
    """What each budget's scope spent (priced events) in its period until ``now``, to the last digit of raw
    ``FINAL``."""
    return spend_in(querier, [(budget, Window(budget.period_of(now)[0], now)) for budget in budgets])


def spend_in(querier: TextQuerier, asks: Sequence[tuple[Budget, Window]], *,
             marks: Mapping[str, datetime] | None = None) -> list[Decimal]:
    """What each budget's scope spent (priced events) in its window, to the last digit of raw ``FINAL``.

    One statement per ``_PER_QUERY`` windows (:func:`~spendstream.detect.windows.layered`): closed days
    from the day rollups, the open days from the hour rollups, the partial hours at the windows' ends
    from raw, each table read once for all of them, every watermark computed once beforehand
    (:func:`~spendstream.sinks.rollups.watermarks`: one statement rather than a subquery per layer), or
    given as ``marks``: a detection pass's, computed once for all its detectors
    (:func:`~spendstream.detect.pass_marks.pass_marks`).
    """
    out: list[Decimal] = []
    if marks is None:  # once, not once per layer and statement
        marks = rollups.watermarks(querier, list(layers_of([budget for budget, _ in asks])))
    for first in range(0, len(asks), _PER_QUERY):
        chunk, params = [], {}
        for i, (budget, budget_window) in enumerate(asks[first:first + _PER_QUERY]):
            where = "1"
            if budget.scope:
                where = f"{budget.scope[0]} = {{b{i}_value:String}}"
                params[f"b{i}_value"] = budget.scope[1]
            chunk.append(Ask(budget_window, _LAYERS[budget.scope[0] if budget.scope else None], where))
        spent, window = layered(chunk, ["cost_usd"], name="b", marks=marks)
        by_budget = dict(query_result(querier, f"SELECT w, sum(cost_usd) FROM {spent} GROUP BY w",
                                      params | window).rows)
        out += [by_budget.get(i) or Decimal(0) for i in range(len(chunk))]
    return out


# Whole days, then whole hours: customers from their own rollups (a month of customer_hours is raw's size at
# many customers; their hours sorted by customer, so a customer's today reads its rows, not every customer's),
# everything else from the compact hours. team_days rolls up every event, so all spend too.
_LAYERS = {None: (rollups.TEAM_DAYS, rollups.HOURS), "team": (rollups.TEAM_DAYS, rollups.HOURS),
           "feature": (rollups.FEATURE_DAYS, rollups.HOURS),
           "customer": (shapes.CUSTOMER_DAYS, rollups.CUSTOMER_PROVIDER_HOURS)}
_PER_QUERY = 50  # each budget adds about a kB of SQL; ClickHouse parses up to 256 KiB by default


# How long after a period closes passes still evaluate it: a crossing in its last minutes, or
# events of it that arrive late, are alerted if a pass runs within this (notify outages included).
CLOSED_PERIOD_GRACE = timedelta(hours=6)


def periods(budget: Budget, now: datetime, *, closed_grace: timedelta = CLOSED_PERIOD_GRACE,
            ) -> list[tuple[datetime, datetime]]:
    """The periods [start, end) (UTC) a pass at ``now`` evaluates: the one that closed less than ``closed_grace``
    ago, if any, then the current one."""
    start, end = budget.period_of(now)
    if now - start >= closed_grace:
        return [(start, end)]
    closed_start, _ = budget.period_of(start - timedelta(microseconds=1))
    return [(closed_start, start), (start, end)]


def evaluate(querier: TextQuerier, budgets: list[Budget], now: datetime, *,
             closed_grace: timedelta = CLOSED_PERIOD_GRACE, marks: Mapping[str, datetime] | None = None
             ) -> list[Alert]:
    """One alert per threshold each budget has crossed in its current period, and in the period that closed less
    than ``closed_grace`` before ``now`` (its whole spend: a crossing in its last minutes is alerted here).

    An alert's dedup key names the budget, the period's start and the threshold, whichever pass raises it, so
    storing the alerts of every pass (:func:`~spendstream.alerting.delivery.store_new_alerts`) alerts each
    crossing once. ``marks``: the pass's watermarks (:func:`~spendstream.detect.pass_marks.pass_marks`), else
    computed here."""
    asks = [(budget, start, end) for budget in budgets
            for start, end in periods(budget, now, closed_grace=closed_grace)]
    spent = spend_in(querier, [(budget, Window(start, min(end, now))) for budget, start, end in asks], marks=marks)
    return [alert for (budget, start, end), spent_usd in zip(asks, spent, strict=True)
            for alert in _crossings(budget, start=start, end=end, spent_usd=spent_usd, now=now)]


def _crossings(budget: Budget, *, start: datetime, end: datetime, spent_usd: Decimal, now: datetime) -> list[Alert]:
    """The alerts for the thresholds ``spent_usd`` crossed in ``budget``'s period [start, end)."""
    used = spent_usd / budget.amount_usd * 100
    crossed = [t for t in budget.thresholds if used >= t]
    if not crossed:
        return []
    if now >= end:
        forecast = f"the period closed at {end:%Y-%m-%d %H:%M} UTC"
    else:
        elapsed = max((now - start).total_seconds(), 1.0)
        rate = spent_usd / Decimal(elapsed)  # USD per second in this period
        runs_out = start + timedelta(seconds=float(budget.amount_usd / rate)) if rate > 0 else None
        forecast = ("already spent" if spent_usd >= budget.amount_usd else
                    f"runs out {runs_out:%Y-%m-%d %H:%M} UTC at this period's burn rate" if runs_out and runs_out < end
                    else "lasts the period at this burn rate")
    subject = f"{budget.scope[0]}={budget.scope[1]}" if budget.scope else "all spend"
    alerts = []
    for threshold in crossed:
        severity = next(s for floor, s in _SEVERITY if threshold >= floor)
        alerts.append(Alert(
            kind="budget_burn", severity=severity, state="firing", subject=subject,
            window_start=start, window_end=end, observed=spent_usd.quantize(Decimal("0.000001")),
            expected=budget.amount_usd * threshold / 100,
            dedup_key=f"budget:{budget.name}:{start:%Y-%m-%dT%H:%M}:{threshold}",
            message=(f"budget {budget.name!r} ({budget.period}, ${budget.amount_usd}) is {used:.0f}% used: "
                     f"${spent_usd:.2f} spent since {start:%Y-%m-%d %H:%M} UTC; {forecast}"),
            created_at=now))
    return alerts
