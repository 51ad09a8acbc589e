"""The provider's bill against the meter: cost exports imported idempotently, gaps named per day × provider × model.

The fixtures (tests/fixtures/invoices, sources in its README) are the providers' documented
shapes. Metered cost comes from the bundled catalog on 2024-11-02: gpt-4o $2.50/$10 per
million input/output tokens, gpt-4.1 $2/$8, claude-3-5-sonnet $3/$15, Bedrock claude-3-haiku
$0.25/$1.25, Azure gpt-4o-mini $0.15/$0.60 — 1M input and 100k output tokens each.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from spendstream.agents.stages import process
from spendstream.invoices.compare import (
    INVOICE_HIGHER,
    MATCH,
    METERED_HIGHER,
    ONLY_INVOICE,
    ONLY_METERED,
    compare_invoices,
    render,
)
from spendstream.invoices.formats import InvoiceFormatError, parse_invoice, read_invoice
from spendstream.invoices.table import import_invoice
from spendstream.pricing import Pricer
from spendstream.report import build_report
from spendstream.schemas import UsageEvent
from spendstream.sinks.writer import SinkWriter
from tests.test_one_shape import emitted

FIXTURES = Path(__file__).parent / "fixtures" / "invoices"
FILES = ("openai_costs.json", "anthropic_cost_report.json", "focus_bill.csv")
DAY1, DAY2 = date(2024, 11, 1), date(2024, 11, 2)


def _lines(name: str) -> list[tuple]:
    return [(line.day, line.provider, line.model, line.charge_category, line.amount_usd)
            for line in read_invoice(FIXTURES / name).lines]


def test_openai_organization_costs_are_read_exactly() -> None:
    invoice = read_invoice(FIXTURES / "openai_costs.json")
    assert invoice.source == "openai_costs" and invoice.file_digest.startswith("sha256:")
    assert _lines("openai_costs.json") == [
        (DAY1, "openai", "", "Usage", Decimal("0.06")),  # the documented example: no line item, no model
        (DAY2, "openai", "gpt-4o-2024-08-06", "Usage", Decimal("2.5")),
        (DAY2, "openai", "gpt-4o-2024-08-06", "Usage", Decimal("1.0")),
        (DAY2, "openai", "gpt-4o-mini-2024-07-18", "Usage", Decimal("0.150000000000000001")),  # not a float's 0.15
    ]


def test_anthropic_cost_report_amounts_are_cents() -> None:
    assert _lines("anthropic_cost_report.json") == [
        (DAY2, "anthropic", "claude-3-5-sonnet-20241022", "Usage", Decimal("3")),
        (DAY2, "anthropic", "claude-3-5-sonnet-20241022", "Usage", Decimal("2")),
        (DAY2, "anthropic", "", "Usage", Decimal("0.01")),  # web search: billed without a model
    ]


def test_a_focus_bill_names_catalog_providers_and_keeps_non_usage_charges_apart() -> None:
    assert _lines("focus_bill.csv") == [
        (DAY2, "aws", "anthropic.claude-3-haiku-20240307-v1:0", "Usage", Decimal("0.25")),
        (DAY2, "aws", "anthropic.claude-3-haiku-20240307-v1:0", "Usage", Decimal("0.05")),
        (DAY2, "azure", "gpt-4o-mini", "Usage", Decimal("0.21")),
        (DAY2, "azure", "", "Tax", Decimal("0.05")),
    ]


@pytest.mark.parametrize(("data", "error"), [
    (b'{"object": "page", "data": [{"start_time": 0, "end_time": 1, "results": [{"amount": {"value": 1, '
     b'"currency": "eur"}}]}]}', r"x.json: data\[0\].results\[0\]: currency 'eur': only USD"),
    (b"ChargePeriodStart,BilledCost,BillingCurrency,ChargeCategory,ServiceProviderName\n"
     b"2024-11-02T00:00:00Z,,USD,Usage,OpenAI\n", r"x.json:2: amount '' is not a number"),
    (b"ChargePeriodStart,Cost\n2024-11-02,1\n", r"not a FOCUS cost and usage CSV: no column\(s\) BilledCost"),
    (b'{"data": {}}', "neither an OpenAI organization costs page"),
    (b'{"object": "page",', r"x.json:1: not valid JSON"),
])
def test_an_export_that_cannot_be_read_exactly_is_refused_saying_where(data: bytes, error: str) -> None:
    with pytest.raises(InvoiceFormatError, match=error):
        parse_invoice(data, file_name="x.json")


def test_repeated_lines_of_one_export_are_kept_each_once() -> None:
    row = b"2024-11-02T00:00:00Z,0.10,USD,Usage,OpenAI\n"
    invoice = parse_invoice(b"ChargePeriodStart,BilledCost,BillingCurrency,ChargeCategory,ServiceProviderName\n"
                            + row + row, file_name="twice.csv")
    assert [line.occurrence for line in invoice.lines] == [0, 1] and invoice.total_usd == Decimal("0.20")


def _invoice_rows(store) -> tuple[int, Decimal]:
    return tuple(store.query("SELECT count(), sum(amount_usd) FROM invoice_lines FINAL "
                             "WHERE day IN ('2024-11-01', '2024-11-02')").rows[0])


def test_importing_the_same_files_twice_stores_the_same_rows(embedded_store) -> None:
    for _ in range(2):
        for name in FILES:
            import_invoice(embedded_store, read_invoice(FIXTURES / name))
        assert _invoice_rows(embedded_store) == (11, Decimal("9.280000000000000001"))
    digests = {read_invoice(FIXTURES / name).file_digest for name in FILES}
    stored = {row[0] for row in embedded_store.query("SELECT file_digest FROM invoice_lines FINAL").rows}
    assert digests <= stored
    imports = embedded_store.query("SELECT file_name, lines FROM invoice_imports FINAL ORDER BY file_name").rows
    assert [r for r in imports if r[0] in FILES] == [["anthropic_cost_report.json", 3], ["focus_bill.csv", 4],
                                                     ["openai_costs.json", 4]]


@pytest.mark.integration
def test_reconcile_names_every_gap_per_day_provider_and_model(embedded_store, broker: str, topic: str) -> None:
    at = datetime(2024, 11, 2, 12, tzinfo=timezone.utc)
    events = [UsageEvent(event_id=f"invoice-test-{provider}-{model}", provider=provider, model=model, ts=at,
                         input_tokens=1_000_000, output_tokens=100_000)
              for provider, model in [("openai", "gpt-4o-2024-08-06"), ("openai", "gpt-4.1"),
                                      ("anthropic", "claude-3-5-sonnet-20241022"),
                                      ("bedrock", "anthropic.claude-3-haiku-20240307-v1:0"), ("azure", "gpt-4o-mini")]]
    batch = process(emitted(broker, topic, events, expect=1), Pricer())
    asyncio.run(SinkWriter(embedded_store).write(batch))
    for name in FILES:
        import_invoice(embedded_store, read_invoice(FIXTURES / name))

    comparison = compare_invoices(embedded_store, datetime(2024, 11, 1, tzinfo=timezone.utc),
                                  datetime(2024, 11, 3, tzinfo=timezone.utc))
    assert [(r.day, r.provider, r.model, r.invoiced, r.metered, r.status) for r in comparison.rows] == [
        (DAY1, "openai", "", Decimal("0.06"), None, ONLY_INVOICE),
        (DAY2, "anthropic", "", Decimal("0.01"), None, ONLY_INVOICE),
        (DAY2, "anthropic", "claude-3-5-sonnet-20241022", Decimal(5), Decimal("4.5"), INVOICE_HIGHER),
        (DAY2, "aws", "anthropic.claude-3-haiku-20240307-v1:0", Decimal("0.3"), Decimal("0.375"), METERED_HIGHER),
        (DAY2, "azure", "gpt-4o-mini", Decimal("0.21"), Decimal("0.21"), MATCH),
        (DAY2, "openai", "gpt-4.1", None, Decimal("2.8"), ONLY_METERED),
        (DAY2, "openai", "gpt-4o-2024-08-06", Decimal("3.5"), Decimal("3.5"), MATCH),
        (DAY2, "openai", "gpt-4o-mini-2024-07-18", Decimal("0.150000000000000001"), None, ONLY_INVOICE),
    ]
    assert comparison.not_usage == {"Tax": Decimal("0.05")}
    text = render(comparison)
    assert "claude-3-5-sonnet-20241022" in text and "invoice higher by $0.5000" in text
    assert "metered higher by $0.0750" in text and "6 gap(s), 2 day × provider × model match(es)" in text
    assert "not compared (charge category Tax): $0.0500" in text

    page = build_report(embedded_store, datetime(2024, 11, 1, tzinfo=timezone.utc),
                        datetime(2024, 11, 3, tzinfo=timezone.utc))
    section = page[page.index("<h2>Invoices vs metered cost</h2>"):]
    assert "6 gap(s), 2 match(es)" in section
    assert "<td>claude-3-5-sonnet-20241022</td><td class=\"n\">5</td><td class=\"n\">4.5</td>" in section
    assert "<td>invoice higher</td>" in section and "<td>only metered</td>" in section


def test_the_report_says_when_no_invoice_was_imported(embedded_store) -> None:
    page = build_report(embedded_store, datetime(2021, 3, 1, tzinfo=timezone.utc),
                        datetime(2021, 3, 2, tzinfo=timezone.utc))
    assert "No invoice lines for these days" in page


@pytest.mark.integration
def test_the_cli_imports_idempotently_and_reconcile_exits_1_naming_the_gaps(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSTREAM_")}
    env["SPENDSTREAM_DATA_DIR"] = str(tmp_path / "data")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "spendstream", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    for _ in range(2):
        imported = cli("invoices", "import", *(str(FIXTURES / name) for name in FILES))
        assert imported.returncode == 0, imported.stderr
        assert "openai_costs.json: 4 line(s) of openai_costs, $3.710000" in imported.stdout
    bad = cli("invoices", "import", str(FIXTURES / "README.md"))
    assert bad.returncode == 2 and "not a FOCUS cost and usage CSV" in bad.stderr
    recon = cli("reconcile", "--invoices", "--since", "2024-11-01", "--until", "2024-11-03")
    assert recon.returncode == 1, recon.stderr
    assert "gpt-4o-2024-08-06" in recon.stdout and "only on the invoice" in recon.stdout
    assert "7 gap(s), 0 day × provider × model match(es)" in recon.stdout  # nothing metered in this store
