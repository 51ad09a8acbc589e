"""Conflicting copies of stored events (sinks/conflicts.py records them): one alert a day that they arrive."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa

from spendstream.schemas.alert import Alert


def conflict_alerts(conflicts: pa.Table, now: datetime) -> list[Alert]:
    """One ``event_conflict`` alert per UTC day of detection on which conflicting copies arrived."""
    if conflicts.num_rows == 0:
        return []
    day = now.date()
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return [Alert(
        kind="event_conflict", severity="error", state="firing", subject="usage_events",
        window_start=start, window_end=start + timedelta(days=1), observed=Decimal(conflicts.num_rows),
        dedup_key=f"event_conflict:{day.isoformat()}",
        message=(f"Copies of stored events arrive with other content under the same event_id ({conflicts.num_rows} "
                 "in the first batch of the day). The first copy stored stands and the others are not applied; "
                 "event_conflicts lists each, with what differs and where both copies came from. A sender is "
                 "re-using event ids."),
        created_at=now,
    )]
