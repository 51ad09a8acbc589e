"""Non-token charges: tool-call and request fees as their own cost line, stored and exported as FOCUS meters.

Expected amounts come from the providers' published prices (URL beside each).
"""

from __future__ import annotations

import csv
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.focus import export_focus
from spendstream.pricing import Pricer, UsageColumns
from spendstream.schemas import UsageEvent
from spendstream.sinks.rows import usage_table

TS = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _price(**fields: object):
    return Pricer().price(UsageEvent(ts=TS, **fields))


def test_anthropic_web_searches_are_a_fee_line_of_their_own() -> None:
    # https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/web-search-tool#usage-and-pricing:
    # "$10 per 1,000 searches" plus tokens; claude-sonnet-4-5 $3 / $15 per million tokens
    record = _price(provider="anthropic", model="claude-sonnet-4-5", input_tokens=10_000, output_tokens=1_000,
                    web_search_calls=3, web_fetch_calls=2)
    assert (record.input_cost, record.output_cost) == (Decimal("0.03"), Decimal("0.015"))
    assert record.fee_cost == Decimal("0.03")  # web fetch: tokens only (same page)
    assert record.total_cost == Decimal("0.075") == record.list_cost
    assert (record.web_search_price_per_call, record.web_fetch_price_per_call) == (Decimal("0.01"), Decimal(0))


def test_openai_file_search_and_web_search_calls() -> None:
    # https://platform.openai.com/docs/pricing#built-in-tools: file search $2.50 / 1k calls,
    # web search $10 / 1k calls; gpt-4.1 $2 / $8 per million tokens
    record = _price(provider="openai", model="gpt-4.1", input_tokens=100_000, output_tokens=10_000,
                    file_search_calls=4, web_search_calls=1)
    assert record.fee_cost == Decimal("0.02")
    assert record.total_cost == Decimal("0.2") + Decimal("0.08") + Decimal("0.02")


@pytest.mark.parametrize(("status", "fee"), [("ok", "0.012"), ("invalid_output", "0.012"), ("error", "0"),
                                             ("rate_limited", "0")])
def test_a_request_fee_is_charged_for_answered_requests_only(status: str, fee: str) -> None:
    # Perplexity Sonar as the catalog prices it: $1 / $1 per million tokens and $12 per 1,000
    # requests (https://docs.perplexity.ai/guides/pricing, high search context)
    record = _price(provider="perplexity", model="sonar", input_tokens=1_000, output_tokens=500, status=status)
    assert record.fee_cost == Decimal(fee)
    assert record.total_cost == Decimal("0.0015") + Decimal(fee)
    assert record.request_price_per_call == Decimal("0.012")


def test_batch_and_single_paths_agree_on_fees() -> None:
    events = [UsageEvent(ts=TS + timedelta(seconds=i), provider=p, model=m, input_tokens=1_000, output_tokens=10,
                         web_search_calls=i % 4, file_search_calls=i % 3, status="ok" if i % 5 else "error")
              for i, (p, m) in enumerate([("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4.1"),
                                          ("perplexity", "sonar"), ("google", "gemini-2.5-flash")] * 5)]
    batch = Pricer().price_columns(UsageColumns.from_events(events))
    assert batch.fee_cost.to_pylist() == [Pricer().price(e).fee_cost for e in events]
    assert any(batch.fee_cost.to_pylist())
    for i in range(len(events)):
        assert batch.total_cost[i].as_py() == (batch.input_cost[i].as_py() + batch.output_cost[i].as_py()
                                               + batch.fee_cost[i].as_py())


@pytest.mark.integration
def test_fees_are_stored_and_exported_as_focus_meters(embedded_store, tmp_path) -> None:
    day = datetime(2026, 10, 2, 9, tzinfo=timezone.utc)
    run = uuid.uuid4().hex[:8]
    events = [
        {"event_id": f"{run}-a", "ts": day.isoformat(), "provider": "anthropic", "model": "claude-sonnet-4-5",
         "input_tokens": 10_000, "output_tokens": 1_000, "web_search_calls": 3, "team": "research"},
        {"event_id": f"{run}-b", "ts": day.isoformat(), "provider": "perplexity", "model": "sonar",
         "input_tokens": 1_000, "output_tokens": 500, "team": "research"},
    ]
    batch = process([SourceRecord("usage", 0, 0, orjson.dumps(events))], Pricer())
    embedded_store.insert_arrow("usage_events", usage_table(batch))
    stored = embedded_store.query(
        "SELECT event_id, fee_cost, total_cost, web_search_price_per_call, list_request_price_per_call "
        f"FROM usage_events FINAL WHERE event_id LIKE '{run}-%' ORDER BY event_id").rows
    assert [tuple(row) for row in stored] == [
        (f"{run}-a", Decimal("0.03"), Decimal("0.075"), Decimal("0.01"), Decimal(0)),
        (f"{run}-b", Decimal("0.012"), Decimal("0.0135"), Decimal(0), Decimal("0.012"))]

    result = export_focus(embedded_store, day, day + timedelta(hours=1), tmp_path / "focus.csv")
    with open(result.path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sum(Decimal(r["EffectiveCost"]) for r in rows) == Decimal("0.0885") == result.effective_cost
    fees = {r["SkuMeter"]: r for r in rows if r["PricingUnit"] == "Calls"}
    assert fees.keys() == {"web search", "request"}
    assert (fees["web search"]["ConsumedQuantity"], Decimal(fees["web search"]["EffectiveCost"]),
            Decimal(fees["web search"]["ListUnitPrice"])) == ("3", Decimal("0.03"), Decimal("0.01"))
    assert fees["request"]["ChargeDescription"] == "sonar request calls"


def test_prices_show_lists_the_fees_per_call() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    env.pop("SPENDSTREAM_OVERRIDES_FILE", None)
    shown = subprocess.run([sys.executable, "-m", "spendstream", "prices", "show", "claude-sonnet-4-5",
                            "--provider", "anthropic", "--at", "2026-11-01"], capture_output=True, text=True,
                           env=env, timeout=120, cwd=root)
    assert shown.returncode == 0, shown.stderr
    assert "USD per call\n    web_search      0.01\n" in shown.stdout
