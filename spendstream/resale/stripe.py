"""Usage as Stripe meter events: one per customer, meter and period, as JSON lines.

Each line is the body of ``POST /v1/billing/meter_events`` (https://docs.stripe.com/api/billing/meter-event/create)::

    {"event_name": "ai_spend", "identifier": "spendstream:ai_spend:cus_NciAYcXfLnqBoz:2026-11-02",
     "timestamp": 1793577600, "payload": {"stripe_customer_id": "cus_NciAYcXfLnqBoz", "value": "1234"}}

``identifier`` is Stripe's idempotency key: it names the meter, the customer and the period,
so exporting a period again sends the same keys and Stripe counts each once (it enforces
uniqueness over a rolling window of at least 24 hours: send a period once it is closed).
``timestamp`` is the period's start, so the usage lands in the billing period it belongs to
(Stripe takes events up to 35 days old). Values are whole numbers: ``revenue_cents`` is the
price book's revenue rounded to the cent (half to even), and the export says how much that
rounding moved in total; token and request meters are counts.

What cannot be exported is counted, not dropped in silence: usage without a customer, a
customer without ``stripe_customer_id`` in the price book, and attempts with no revenue
(no rule applies, or the cost is unknown).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson

from spendstream.resale.pricebook import Meter
from spendstream.sinks.store import TextQuerier, query_result, sql_time

GRAINS = {"day": timedelta(days=1), "hour": timedelta(hours=1)}
MAX_IDENTIFIER = 100  # Stripe's limit


@dataclass
class StripeExport:
    records: list[dict[str, Any]] = field(default_factory=list)
    rounding_usd: Decimal = Decimal(0)  # exported cents minus exact revenue, summed
    no_customer_attempts: int = 0
    no_stripe_id: dict[str, int] = field(default_factory=dict)  # customer → attempts not exported
    no_revenue_attempts: int = 0

    def lines(self) -> Iterator[bytes]:
        for record in self.records:
            yield orjson.dumps(record) + b"\n"


def stripe_meter_events(querier: TextQuerier, meters: list[Meter], *, since: datetime, until: datetime,
                        grain: str = "day") -> StripeExport:
    """Meter events for the whole periods of ``grain`` in ``[since, until)`` (both must fall on period bounds)."""
    step = GRAINS[grain]
    for name, at in (("since", since), ("until", until)):
        if _floor(at, step) != at:
            raise ValueError(f"--{name} {at:%Y-%m-%d %H:%M} is not the start of a{'n' if grain == 'hour' else ''} "
                             f"{grain} (UTC): only whole periods are exported, each once")
    if until <= since:
        raise ValueError("--until must be after --since")
    bucket = "toStartOfDay(hour)" if grain == "day" else "hour"
    rows = query_result(querier, f"""
        SELECT {bucket} AS period, m.customer AS customer, any(c.stripe_customer_id) AS stripe_id,
               sum(m.revenue_usd) AS revenue, toInt64(sumIf(m.attempts, m.revenue_usd IS NULL)) AS no_revenue,
               toInt64(sum(m.input_tokens)) AS input_tokens, toInt64(sum(m.output_tokens)) AS output_tokens,
               toInt64(sum(m.ok_attempts)) AS requests, toInt64(sum(m.attempts)) AS attempts
        FROM customer_margin(since = {{since:String}}, until = {{until:String}}) AS m
        LEFT JOIN (SELECT customer, stripe_customer_id FROM pricebook_customers FINAL WHERE version =
                   (SELECT argMax(version, loaded_at) FROM pricebook_loads FINAL)) AS c ON m.customer = c.customer
        GROUP BY period, customer ORDER BY period, customer""",
                        {"since": sql_time(since), "until": sql_time(until)}).dicts()
    export = StripeExport()
    for row in rows:
        if row["customer"] == "":
            export.no_customer_attempts += row["attempts"]
            continue
        if not row["stripe_id"]:
            export.no_stripe_id[row["customer"]] = export.no_stripe_id.get(row["customer"], 0) + row["attempts"]
            continue
        export.no_revenue_attempts += row["no_revenue"]
        period = datetime.fromisoformat(row["period"]).replace(tzinfo=timezone.utc)
        for meter in meters:
            value = _value(meter.value, row, export)
            if value:
                export.records.append(_record(meter.event_name, row["stripe_id"], period, grain, value))
    return export


def _value(kind: str, row: dict[str, Any], export: StripeExport) -> int:
    if kind == "revenue_cents":
        exact = (row["revenue"] or Decimal(0)) * 100
        cents = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
        export.rounding_usd += (cents - exact) / 100
        return cents
    if kind == "tokens":
        return row["input_tokens"] + row["output_tokens"]
    return int(row[kind])


def _record(event_name: str, stripe_id: str, period: datetime, grain: str, value: int) -> dict[str, Any]:
    when = f"{period:%Y-%m-%d}" if grain == "day" else f"{period:%Y-%m-%dT%H}"
    identifier = f"spendstream:{event_name}:{stripe_id}:{when}"
    if len(identifier) > MAX_IDENTIFIER:  # a long meter name: the same key, shortened by its digest
        identifier = "spendstream:" + hashlib.sha256(identifier.encode()).hexdigest()[:40]
    return {"event_name": event_name, "identifier": identifier, "timestamp": int(period.timestamp()),
            "payload": {"stripe_customer_id": stripe_id, "value": str(value)}}


def _floor(at: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return at - (at - epoch) % step
