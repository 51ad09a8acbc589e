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
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spendstream.configfile import load_model
from spendstream.schemas.alert import Alert, Severity
from spendstream.sinks.store import TextQuerier, query_result, sql_time

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
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

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


def evaluate(querier: TextQuerier, budgets: list[Budget], now: datetime) -> list[Alert]:
    """One alert per threshold each budget has crossed in its current period."""
    alerts = []
    for budget in budgets:
        start, end = budget.period_of(now)
        where = "priced AND ts >= {start:DateTime64(3, 'UTC')} AND ts < {now:DateTime64(3, 'UTC')}"
        params = {"start": sql_time(start), "now": sql_time(now)}
        if budget.scope:
            where += f" AND {budget.scope[0]} = {{value:String}}"
            params["value"] = budget.scope[1]
        spent = query_result(querier, f"SELECT sum(total_cost) FROM usage_events FINAL WHERE {where}",
                             params).scalar() or Decimal(0)
        used = spent / budget.amount_usd * 100
        crossed = [t for t in budget.thresholds if used >= t]
        if not crossed:
            continue
        elapsed = max((now - start).total_seconds(), 1.0)
        rate = spent / Decimal(elapsed)  # USD per second in this period
        runs_out = start + timedelta(seconds=float(budget.amount_usd / rate)) if rate > 0 else None
        forecast = ("already spent" if spent >= budget.amount_usd else
                    f"runs out {runs_out:%Y-%m-%d %H:%M} UTC at this period's burn rate" if runs_out and runs_out < end
                    else "lasts the period at this burn rate")
        subject = f"{budget.scope[0]}={budget.scope[1]}" if budget.scope else "all spend"
        for threshold in crossed:
            severity = next(s for floor, s in _SEVERITY if threshold >= floor)
            alerts.append(Alert(
                kind="budget_burn", severity=severity, state="firing", subject=subject,
                window_start=start, window_end=end, observed=spent.quantize(Decimal("0.000001")),
                expected=budget.amount_usd * threshold / 100,
                dedup_key=f"budget:{budget.name}:{start:%Y-%m-%dT%H:%M}:{threshold}",
                message=(f"budget {budget.name!r} ({budget.period}, ${budget.amount_usd}) is {used:.0f}% used: "
                         f"${spent:.2f} spent since {start:%Y-%m-%d %H:%M} UTC; {forecast}"),
                created_at=now))
    return alerts
