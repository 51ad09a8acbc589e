"""The demo's totals against an independent computation from the trace and the catalog."""

from __future__ import annotations

from decimal import Decimal

import pytest
from rich.console import Console

from spendstream.demo.run import run_demo
from spendstream.demo.traffic import DEFAULT_SEED, generate, load_trace
from spendstream.schemas import UsageEvent
from spendstream.settings import Settings
from tests.reference import genai_total

pytestmark = pytest.mark.integration

LIMIT = 3000


def test_demo_counts_balance_and_totals_match_the_catalog(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SPENDSTREAM_KAFKA_BOOTSTRAP", raising=False)
    settings = Settings(data_dir=tmp_path / "data", kafka_bootstrap=None, clickhouse_url=None)
    summary = run_demo(settings, limit=LIMIT, console=Console(file=open(tmp_path / "out.txt", "w")))

    rows = load_trace(LIMIT)
    events = generate(rows, run_id=summary.run_id, start=summary.start, seed=DEFAULT_SEED)
    valid = [e for e in events if isinstance(e, UsageEvent)]
    malformed = [e for e in events if not isinstance(e, UsageEvent)]

    assert summary.emitted == len(events)
    assert (summary.stored, summary.dead_lettered) == (len(valid), len(malformed))
    assert summary.balanced

    # Every trace request succeeds once with the trace's own token counts; only the
    # malformed copies are missing from what was stored.
    ok_input = sum(e.input_tokens for e in valid if e.status == "ok")
    ok_input += sum(e["input_tokens"] for e in malformed
                    if e["status"] == "ok" and isinstance(e.get("input_tokens"), int))
    assert ok_input == sum(r.input_tokens for r in rows) - _lost_to_bad_counts(malformed, rows)

    # Price each event straight from the catalog package, outside the pipeline, in Decimal.
    priced = [e for e in valid if e.provider != "self-hosted"]
    expected = sum((genai_total(e) for e in priced), Decimal(0))
    assert summary.unpriced == len(valid) - len(priced) > 0
    assert abs(summary.total_cost - expected) <= Decimal("1e-9")
    assert summary.total_cost == expected  # in fact to the last digit
    assert (tmp_path / "out.txt").read_text().count("Cost by") == 3


def _lost_to_bad_counts(malformed: list[dict], rows) -> int:
    """Input tokens of successful attempts whose count was sent as text ("n/a")."""
    by_request = {int(e["request_id"].rsplit("r", 1)[1]): e for e in malformed
                  if e["status"] == "ok" and not isinstance(e.get("input_tokens"), int)}
    return sum(rows[n].input_tokens for n in by_request)
