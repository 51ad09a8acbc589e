"""The invoice against the meter, per day × provider × model, with every gap named.

Invoiced: the ``Usage`` lines of ``invoice_lines`` (credits, taxes and adjustments are
summed apart: they are on the bill but no call caused them). Metered: ``total_cost`` of
the priced events in ``usage_events``, per UTC day and catalog provider (the provider the
event was priced as, else as sent).

An invoice names models as the provider bills them (``gpt-4o-2024-08-06``); an event
names the model as the service called it and as the catalog priced it. A metered group
is matched to the invoice model equal to the model as called, else to the one equal to
the catalog model; each group is counted once. An invoice line without a model (tool
fees, an ungrouped export) is compared as such: nothing metered carries an empty model,
so it shows as ``only on the invoice`` unless the export is grouped by model.

Each row says: ``match`` (within the tolerance), ``invoice higher`` (the meter missed
cost or prices too low), ``metered higher`` (the meter prices too high, or the provider
credited), ``only on the invoice`` or ``only metered``. Unpriced events have no metered
cost: their count is given beside, never read as $0.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from spendstream.sinks.store import TextQuerier, query_result, sql_time

MATCH, INVOICE_HIGHER, METERED_HIGHER = "match", "invoice higher", "metered higher"
ONLY_INVOICE, ONLY_METERED = "only on the invoice", "only metered"


@dataclass(frozen=True, slots=True)
class InvoiceGap:
    day: date
    provider: str
    model: str
    invoiced: Decimal | None
    metered: Decimal | None
    unpriced_events: int
    status: str

    @property
    def difference(self) -> Decimal:
        """Invoiced minus metered (a missing side counts as nothing billed or metered)."""
        return (self.invoiced or Decimal(0)) - (self.metered or Decimal(0))


@dataclass(frozen=True, slots=True)
class InvoiceComparison:
    rows: list[InvoiceGap]
    not_usage: dict[str, Decimal]  # ChargeCategory → amount on the invoices, not compared

    @property
    def gaps(self) -> list[InvoiceGap]:
        return [row for row in self.rows if row.status != MATCH]


def compare_invoices(querier: TextQuerier, since: datetime, until: datetime, *,
                     tolerance_usd: Decimal = Decimal("0.01"), tolerance_relative: Decimal = Decimal("0.01"),
                     ) -> InvoiceComparison:
    """Invoice lines and metered cost of the UTC days ``since <= day < until``, compared.

    A pair matches when the difference is at most ``tolerance_usd`` or at most
    ``tolerance_relative`` of the larger side (rounding on the bill, a cent here and there).
    """
    params = {"since": sql_time(since), "until": sql_time(until)}
    invoiced: dict[tuple[date, str, str], Decimal] = {}
    not_usage: dict[str, Decimal] = {}
    for day, provider, model, category, amount in query_result(querier, """
            SELECT day, provider, model, charge_category, sum(amount_usd) FROM invoice_lines FINAL
            WHERE day >= toDate({since:DateTime64(3, 'UTC')}) AND day < toDate({until:DateTime64(3, 'UTC')})
            GROUP BY day, provider, model, charge_category""", params).rows:
        if category == "Usage":
            invoiced[(date.fromisoformat(day), provider, model)] = amount
        else:
            not_usage[category] = not_usage.get(category, Decimal(0)) + amount
    metered: dict[tuple[date, str, str], tuple[Decimal | None, int]] = {}
    for day, provider, model, catalog_model, priced, cost, unpriced in query_result(querier, """
            SELECT toDate(ts) AS day, ifNull(price_provider_id, provider) AS provider_id, model,
                   ifNull(price_model_id, ''), toInt64(countIf(priced)), sumIf(total_cost, priced),
                   toInt64(countIf(NOT priced))
            FROM usage_events FINAL
            WHERE ts >= toDateTime64(toDate({since:DateTime64(3, 'UTC')}), 3, 'UTC')
              AND ts < toDateTime64(toDate({until:DateTime64(3, 'UTC')}), 3, 'UTC')
            GROUP BY day, provider_id, model, price_model_id""", params).rows:
        day_ = date.fromisoformat(day)
        # the invoice's name for this model: as called, else as the catalog priced it, else as called
        name = model if (day_, provider, model) in invoiced else (
            catalog_model if (day_, provider, catalog_model) in invoiced else model)
        so_far, unpriced_so_far = metered.get((day_, provider, name), (None, 0))
        if priced:  # a group of unpriced events only has no metered cost: absent, not $0
            so_far = cost if so_far is None else so_far + cost
        metered[(day_, provider, name)] = (so_far, unpriced_so_far + unpriced)
    rows = []
    for key in sorted(invoiced.keys() | metered.keys()):
        bill = invoiced.get(key)
        cost, unpriced = metered.get(key, (None, 0))
        rows.append(InvoiceGap(*key, bill, cost, unpriced, _status(bill, cost, tolerance_usd, tolerance_relative)))
    return InvoiceComparison(rows, not_usage)


def _status(bill: Decimal | None, cost: Decimal | None, tolerance_usd: Decimal, tolerance_relative: Decimal) -> str:
    if bill is None:
        return ONLY_METERED
    if cost is None:
        return ONLY_INVOICE
    gap = abs(bill - cost)
    if gap <= tolerance_usd or gap <= tolerance_relative * max(abs(bill), abs(cost)):
        return MATCH
    return INVOICE_HIGHER if bill > cost else METERED_HIGHER


def render(comparison: InvoiceComparison) -> str:
    """The comparison as text: every gap, then how many matched and what was not compared."""
    out = []
    for row in comparison.gaps:
        bill = "—" if row.invoiced is None else f"${_money(row.invoiced)}"
        cost = "—" if row.metered is None else f"${_money(row.metered)}"
        by = "" if row.status in (ONLY_INVOICE, ONLY_METERED) else f" by ${_money(abs(row.difference))}"
        unpriced = f" ({row.unpriced_events} unpriced event(s) not in metered)" if row.unpriced_events else ""
        out.append(f"{row.day}  {row.provider:<10} {row.model or '(no model)':<32} invoiced {bill:>12}  "
                   f"metered {cost:>12}  {row.status}{by}{unpriced}")
    matched = len(comparison.rows) - len(comparison.gaps)
    out.append(f"{len(comparison.gaps)} gap(s), {matched} day × provider × model match(es)")
    for category, amount in sorted(comparison.not_usage.items()):
        out.append(f"not compared (charge category {category}): ${_money(amount)}")
    return "\n".join(out)


def _money(amount: Decimal) -> str:
    return f"{amount.quantize(Decimal('0.0001')):,}"
