"""Providers' cost exports read into invoice lines: pure parsing, no I/O beyond the bytes given.

Three shapes, recognised by their content (not the file name):

- **OpenAI organization costs** (``GET /v1/organization/costs``): a ``page`` of daily
  ``bucket``s, each with ``results`` of ``organization.costs.result`` (``amount.value``
  in ``amount.currency``; ``line_item`` such as ``"gpt-4o-2024-08-06, input"`` when grouped
  by line item, else null). The model is the part of the line item before its last ``", "``.
- **Anthropic cost report** (Admin API ``GET /v1/organizations/cost_report``): ``data`` of
  buckets (``starting_at``, ``ending_at``, ``results``), each result with ``amount`` as a
  decimal string **in the currency's lowest unit** (cents: ``"123.45"`` USD is $1.2345),
  ``model`` (null for non-token costs and when not grouped by description), ``cost_type``,
  ``token_type``, ``service_tier``, ``context_window``, ``workspace_id``, ``description``.
- **FOCUS 1.x CSV** (a cloud bill in the FinOps Open Cost and Usage Specification):
  ``ChargePeriodStart``, ``BilledCost``, ``BillingCurrency``, ``ServiceProviderName`` (1.3;
  ``ProviderName`` before), ``ServiceName``, ``ChargeCategory``; the model from ``x_Model``
  where the export has it (FOCUS has no model column), else none.

Amounts stay exact: JSON numbers are read as ``Decimal`` and CSV cells as text. Only
USD is accepted (metered cost is USD): another currency is an error naming the line,
never converted or skipped silently.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from spendstream.focus import PROVIDERS

SOURCES = ("openai_costs", "anthropic_cost_report", "focus_csv")
USAGE = "Usage"  # FOCUS ChargeCategory of what is metered; providers' API exports hold only usage

# FOCUS names of the service or its provider → the catalog's provider id (focus.py writes these).
_FOCUS_PROVIDERS = {name.lower(): provider for provider, names in PROVIDERS.items() for name in names}


class InvoiceFormatError(ValueError):
    """The file is not a cost export this module reads, or a line of it is wrong (the message says where)."""


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One charge of an export. ``line_key`` identifies it within its day, provider and model
    (what the export groups by); ``occurrence`` tells apart lines the export repeats."""

    day: date
    period_start: datetime
    period_end: datetime | None
    provider: str
    model: str  # '' when the line names none (tool fees, ungrouped totals)
    line_key: str
    charge_category: str
    amount_usd: Decimal
    occurrence: int = 0


@dataclass(frozen=True, slots=True)
class Invoice:
    source: str
    file_name: str
    file_digest: str  # sha256 of the file's bytes
    lines: tuple[InvoiceLine, ...]

    @property
    def total_usd(self) -> Decimal:
        return sum((line.amount_usd for line in self.lines), Decimal(0))


def read_invoice(path: Path) -> Invoice:
    """``path`` parsed as whichever of the three exports it is."""
    data = path.read_bytes()
    return parse_invoice(data, file_name=path.name)


def parse_invoice(data: bytes, *, file_name: str) -> Invoice:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    text = data.decode("utf-8-sig")
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise InvoiceFormatError(f"{file_name}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        if doc.get("object") == "page":
            source, lines = "openai_costs", _openai(doc, file_name)
        elif isinstance(doc.get("data"), list) and "has_more" in doc:
            source, lines = "anthropic_cost_report", _anthropic(doc, file_name)
        else:
            raise InvoiceFormatError(f"{file_name}: JSON that is neither an OpenAI organization costs page "
                                     "(object: page) nor an Anthropic cost report (data, has_more)")
    else:
        source, lines = "focus_csv", _focus(text, file_name)
    return Invoice(source, file_name, digest, _numbered(lines))


def _numbered(lines: list[InvoiceLine]) -> tuple[InvoiceLine, ...]:
    """Each line with its occurrence among identical keys, so repeated lines are kept, each once."""
    seen: Counter[tuple[Any, ...]] = Counter()
    numbered = []
    for line in lines:
        key = (line.day, line.provider, line.model, line.line_key)
        numbered.append(InvoiceLine(**{**_fields(line), "occurrence": seen[key]}))
        seen[key] += 1
    return tuple(numbered)


def _fields(line: InvoiceLine) -> dict[str, Any]:
    return {name: getattr(line, name) for name in InvoiceLine.__slots__}


def _usd(amount: Any, currency: Any, where: str) -> Decimal:
    if str(currency).upper() != "USD":
        raise InvoiceFormatError(f"{where}: currency {currency!r}: only USD lines are reconciled with metered cost")
    try:  # an empty or missing amount is an error: a charge nobody can read is not $0
        value = amount if isinstance(amount, Decimal) else Decimal(str(amount).strip())
    except InvalidOperation:
        raise InvoiceFormatError(f"{where}: amount {str(amount)[:40]!r} is not a number") from None
    if not value.is_finite():
        raise InvoiceFormatError(f"{where}: amount {value} is not finite")
    return value


def _openai(doc: dict[str, Any], file_name: str) -> list[InvoiceLine]:
    lines = []
    for b, bucket in enumerate(doc.get("data") or []):
        start = datetime.fromtimestamp(int(bucket["start_time"]), timezone.utc)
        end = datetime.fromtimestamp(int(bucket["end_time"]), timezone.utc)
        for r, result in enumerate(bucket.get("results") or bucket.get("result") or []):
            where = f"{file_name}: data[{b}].results[{r}]"
            amount = result.get("amount") or {}
            item = result.get("line_item") or ""
            model = item.rsplit(", ", 1)[0] if ", " in item else ""
            key = f"project={result.get('project_id') or ''}|line_item={item}"
            lines.append(InvoiceLine(start.date(), start, end, "openai", model, key, USAGE,
                                     _usd(amount.get("value"), amount.get("currency", ""), where)))
    return lines


def _anthropic(doc: dict[str, Any], file_name: str) -> list[InvoiceLine]:
    lines = []
    for b, bucket in enumerate(doc["data"]):
        start = _instant(bucket["starting_at"], f"{file_name}: data[{b}].starting_at")
        end = _instant(bucket["ending_at"], f"{file_name}: data[{b}].ending_at") if bucket.get("ending_at") else None
        for r, result in enumerate(bucket.get("results") or []):
            where = f"{file_name}: data[{b}].results[{r}]"
            cents = _usd(result.get("amount"), result.get("currency", "USD"), where)
            key = "|".join(f"{name}={result.get(name) or ''}" for name in (
                "workspace_id", "description", "cost_type", "token_type", "service_tier", "context_window",
                "inference_geo"))
            lines.append(InvoiceLine(start.date(), start, end, "anthropic", result.get("model") or "", key, USAGE,
                                     cents / 100))  # the lowest currency unit: cents
    return lines


def _focus(text: str, file_name: str) -> list[InvoiceLine]:
    reader = csv.DictReader(io.StringIO(text))
    columns = set(reader.fieldnames or ())
    provider_column = "ServiceProviderName" if "ServiceProviderName" in columns else "ProviderName"
    missing = {"ChargePeriodStart", "BilledCost", "BillingCurrency", "ChargeCategory", provider_column} - columns
    if missing:
        raise InvoiceFormatError(f"{file_name}: not a FOCUS cost and usage CSV: "
                                 f"no column(s) {', '.join(sorted(missing))}")
    lines = []
    for row in reader:
        where = f"{file_name}:{reader.line_num}"
        start = _instant(row["ChargePeriodStart"], where)
        end = _instant(row["ChargePeriodEnd"], where) if row.get("ChargePeriodEnd") else None
        service, vendor = row.get("ServiceName") or "", row[provider_column] or ""
        provider = _FOCUS_PROVIDERS.get(service.lower()) or _FOCUS_PROVIDERS.get(vendor.lower()) or vendor.lower()
        key = "|".join(f"{name}={row.get(name) or ''}" for name in (
            "ServiceName", "SkuId", "SkuPriceId", "SkuMeter", "ResourceId", "ChargeDescription", "ChargeClass"))
        lines.append(InvoiceLine(start.date(), start, end, provider, row.get("x_Model") or "", key,
                                 row["ChargeCategory"] or USAGE,
                                 _usd(row["BilledCost"], row["BillingCurrency"], where)))
    return lines


def _instant(text: str, where: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvoiceFormatError(f"{where}: {text[:40]!r} is not an ISO 8601 time") from None
    return at.astimezone(timezone.utc) if at.tzinfo else at.replace(tzinfo=timezone.utc)
