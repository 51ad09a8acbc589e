"""Models with no price: flagged and stored, never priced as 0, and said once a day per model."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from spendstream.batches import BatchResult
from spendstream.schemas.alert import Alert


def unpriced_alerts(batch: BatchResult, now: datetime) -> list[Alert]:
    """One ``unpriced_model`` alert per provider/model per UTC day seen unpriced in ``batch``.

    The dedup key names the model and the day, so however many batches, workers or
    restarts see the model, the ``alerts`` table holds it once a day.
    """
    if batch.priced is None or batch.events is None or pc.all(batch.priced.priced).as_py():
        return []
    unpriced = pa.table({
        "provider": batch.events["provider"], "model": batch.events["model"],
        "reason": batch.priced.unpriced_reason, "day": pc.cast(batch.events["ts"], pa.date32()),
    }).filter(pc.invert(batch.priced.priced))
    counts = unpriced.group_by(["provider", "model", "reason", "day"]).aggregate([([], "count_all")])
    alerts = []
    for provider, model, reason, day, count in sorted(zip(*counts.to_pydict().values(), strict=True), key=str):
        start = datetime.combine(day, time(0), timezone.utc)
        alerts.append(Alert(
            kind="unpriced_model", severity="warning", state="firing",
            subject=f"provider={provider} model={model}",
            window_start=start, window_end=start + timedelta(days=1), observed=Decimal(count),
            dedup_key=f"unpriced_model:{provider}/{model}:{day.isoformat()}",
            message=(f"{reason}. Its events are stored with priced = false (never as 0); add the model to the "
                     "overrides file, or upgrade the catalog, then run `spendstream reprice`."),
            created_at=now,
        ))
    return alerts
