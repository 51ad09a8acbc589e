"""Invoice lines in ClickHouse: ``invoice_lines`` and ``invoice_imports``, written idempotently.

A line's key is what its export says it is (day, provider, model, the export's own line
identity, and its occurrence among repeats), so importing the same file twice stores the
same rows, and a later export of the same days replaces the lines it repeats (the newest
import wins). Each row keeps the digest of the file it came from. The tables are
made by the migration "money II" (sinks/billing.py).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa

from spendstream.invoices.formats import Invoice
from spendstream.sinks.rows import MONEY, TS
from spendstream.sinks.store import Store


def import_invoice(store: Store, invoice: Invoice, *, now: datetime | None = None) -> int:
    """Store ``invoice``'s lines and its import record; returns the lines stored."""
    imported_at = now or datetime.now(timezone.utc)
    lines = invoice.lines
    n = len(lines)
    if n:
        store.insert_arrow("invoice_lines", pa.table({
            "source": pa.array([invoice.source] * n, pa.string()),
            "day": pa.array([line.day for line in lines], pa.date32()),
            "provider": pa.array([line.provider for line in lines], pa.string()),
            "model": pa.array([line.model for line in lines], pa.string()),
            "line_key": pa.array([line.line_key for line in lines], pa.string()),
            "occurrence": pa.array([line.occurrence for line in lines], pa.uint32()),
            "period_start": pa.array([line.period_start for line in lines], TS),
            "period_end": pa.array([line.period_end for line in lines], TS),
            "charge_category": pa.array([line.charge_category for line in lines], pa.string()),
            "amount_usd": pa.array([line.amount_usd for line in lines], MONEY),
            "file_name": pa.array([invoice.file_name] * n, pa.string()),
            "file_digest": pa.array([invoice.file_digest] * n, pa.string()),
            "imported_at": pa.array([imported_at] * n, TS),
        }))
    days = sorted(line.day for line in lines)
    store.insert_arrow("invoice_imports", pa.table({
        "file_digest": pa.array([invoice.file_digest], pa.string()),
        "file_name": pa.array([invoice.file_name], pa.string()),
        "source": pa.array([invoice.source], pa.string()),
        "lines": pa.array([n], pa.uint64()),
        "total_usd": pa.array([invoice.total_usd], MONEY),
        "first_day": pa.array([days[0] if days else None], pa.date32()),
        "last_day": pa.array([days[-1] if days else None], pa.date32()),
        "imported_at": pa.array([imported_at], TS),
    }))
    return n
