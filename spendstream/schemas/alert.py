"""Alert: what a detector says, with a stable key for deduplication."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Severity = Literal["info", "warning", "error", "critical"]
AlertState = Literal["firing", "resolved"]


class Alert(BaseModel):
    """One state change of one alert.

    ``dedup_key`` is the same for every firing/resolved message about one
    condition on one subject, so a receiver (PagerDuty, Slack thread) can group them.
    """

    model_config = ConfigDict(frozen=True, title="Alert")

    schema_version: Literal[1] = 1
    kind: str = Field(description="e.g. retry_storm, spend_anomaly, budget_burn, idle_gpu, unpriced_model.")
    severity: Severity
    state: AlertState
    subject: str = Field(description="What the alert is about, e.g. 'feature=search-summarise'.")
    window_start: AwareDatetime
    window_end: AwareDatetime
    observed: Decimal | None = None
    expected: Decimal | None = None
    dedup_key: str
    message: str
    created_at: datetime
    correlated_with: str | None = Field(
        default=None, description="The dedup key of the incident this alert is part of (a subject one cause lifts "
                                  "with a more specific one): stored, not delivered on its own.")
