"""The resale price book: validated with file:line errors, kept beside cost so margin is one query, exported
as Stripe meter events.

Cost is the bundled catalog's gpt-4o on 2024-11-02 ($2.50 input, $1.25 cached input, $10 output per
million tokens): 800k uncached + 200k cached input and 100k output tokens cost $2.00 + $0.25 + $1.00 =
$3.25 per event. Revenue below is worked out by hand from the price book in BOOK.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from spendstream.agents.stages import process
from spendstream.pricing import Pricer
from spendstream.resale.pricebook import PriceBookError, glob_regex, load_pricebook
from spendstream.resale.stripe import stripe_meter_events
from spendstream.resale.tables import current_book, store_pricebook
from spendstream.schemas import UsageEvent
from spendstream.sinks.writer import SinkWriter
from tests.test_one_shape import emitted

BOOK = """\
customers:
  acme-{run}: {{plan: enterprise-{run}, stripe_customer_id: cus_Acme{run}}}
  globex-{run}: {{stripe_customer_id: cus_Globex{run}}}
  initech-{run}: {{}}
prices:
  - id: list-plus-30
    markup_percent: 30
    effective_from: 2024-01-01
  - id: enterprise
    plan: enterprise-{run}
    markup_percent: 15
    effective_from: 2024-01-01
  - id: acme-gpt-4o
    customer: acme-{run}
    provider: openai
    model: "gpt-4o*"
    sell: {{input: 3.00, cached_input: 1.50, output: 12.00, per_request: 0.001}}
    effective_from: 2024-11-02T12:00:00Z
stripe:
  meters:
    - {{event_name: ai_spend, value: revenue_cents}}
    - {{event_name: ai_tokens, value: tokens}}
"""
DAY = datetime(2024, 11, 2, tzinfo=timezone.utc)
NEXT = datetime(2024, 11, 3, tzinfo=timezone.utc)
RUN = "r7"  # names of this module's customers: its rows are told apart from other tests' in the shared store


def _book(tmp_path: Path, text: str = BOOK) -> Path:
    path = tmp_path / "pricebook.yaml"
    path.write_text(text.format(run=RUN))
    return path


def _event(i: int, customer: str | None, model: str, hour: int) -> UsageEvent:
    return UsageEvent(event_id=f"resale-{RUN}-{i}", ts=DAY.replace(hour=hour, minute=30), provider="openai",
                      model=model, customer=customer and f"{customer}-{RUN}", feature="chat",
                      input_tokens=1_000_000, cached_input_tokens=200_000, output_tokens=100_000)


@pytest.fixture(scope="module")
def stored(embedded_store, broker: str, tmp_path_factory: pytest.TempPathFactory):
    events = [_event(1, "acme", "gpt-4o", 10), _event(2, "acme", "gpt-4o", 13), _event(3, "globex", "gpt-4o", 13),
              _event(4, "initech", "gpt-4o", 13), _event(5, "acme", "no-such-model", 13)]
    batch = process(emitted(broker, f"test.resale.{RUN}", events, expect=1), Pricer())
    asyncio.run(SinkWriter(embedded_store).write(batch))
    store_pricebook(embedded_store, load_pricebook(_book(tmp_path_factory.mktemp("book"))))
    return embedded_store


@pytest.mark.integration
def test_margin_per_customer_and_feature_is_one_query_on_the_view(stored) -> None:
    rows = stored.query(f"""
        SELECT customer, feature, model, rule_id, sum(cost_usd), sum(revenue_usd), sum(margin_usd),
               sum(unbilled_attempts)
        FROM customer_margin(since = '2024-11-02 00:00:00', until = '2024-11-03 00:00:00')
        WHERE customer LIKE '%-{RUN}' GROUP BY ALL ORDER BY ALL""").rows
    assert rows == [
        # 10:00 enterprise plan +15 % of $3.25; 13:00 the customer's own sell prices:
        # 0.8 × $3 + 0.2 × $1.50 + 0.1 × $12 + 1 request × $0.001 = $3.901
        [f"acme-{RUN}", "chat", "gpt-4o", "acme-gpt-4o", Decimal("3.25"), Decimal("3.901"), Decimal("0.651"), 0],
        [f"acme-{RUN}", "chat", "gpt-4o", "enterprise", Decimal("3.25"), Decimal("3.7375"), Decimal("0.4875"), 0],
        # unpriced: its cost is unknown, so is its revenue (never $0), and it is counted
        [f"acme-{RUN}", "chat", "no-such-model", "enterprise", None, None, None, 1],
        [f"globex-{RUN}", "chat", "gpt-4o", "list-plus-30", Decimal("3.25"), Decimal("4.225"), Decimal("0.975"), 0],
        [f"initech-{RUN}", "chat", "gpt-4o", "list-plus-30", Decimal("3.25"), Decimal("4.225"), Decimal("0.975"), 0],
    ]


@pytest.mark.integration
def test_stripe_meter_events_one_per_customer_meter_and_period_keyed_for_idempotency(stored) -> None:
    version, meters = current_book(stored)
    assert version.startswith("sha256:") and [m.event_name for m in meters] == ["ai_spend", "ai_tokens"]
    export = stripe_meter_events(stored, meters, since=DAY, until=NEXT)
    mine = [r for r in export.records if r["payload"]["stripe_customer_id"].endswith(RUN)]
    # acme: $3.7375 + $3.901 = $7.6385 → 764 cents; globex $4.225 → 422 (half to even)
    assert mine == [
        {"event_name": "ai_spend", "identifier": f"spendstream:ai_spend:cus_Acme{RUN}:2024-11-02",
         "timestamp": 1730505600, "payload": {"stripe_customer_id": f"cus_Acme{RUN}", "value": "764"}},
        {"event_name": "ai_tokens", "identifier": f"spendstream:ai_tokens:cus_Acme{RUN}:2024-11-02",
         "timestamp": 1730505600, "payload": {"stripe_customer_id": f"cus_Acme{RUN}", "value": "3300000"}},
        {"event_name": "ai_spend", "identifier": f"spendstream:ai_spend:cus_Globex{RUN}:2024-11-02",
         "timestamp": 1730505600, "payload": {"stripe_customer_id": f"cus_Globex{RUN}", "value": "422"}},
        {"event_name": "ai_tokens", "identifier": f"spendstream:ai_tokens:cus_Globex{RUN}:2024-11-02",
         "timestamp": 1730505600, "payload": {"stripe_customer_id": f"cus_Globex{RUN}", "value": "1100000"}},
    ]
    assert export.no_stripe_id[f"initech-{RUN}"] == 1  # counted, not sent
    assert export.no_revenue_attempts >= 1  # acme's unpriced call
    assert stripe_meter_events(stored, meters, since=DAY, until=NEXT).records == export.records  # same keys again
    by_hour = stripe_meter_events(stored, meters, since=DAY, until=NEXT, grain="hour").records
    assert {r["identifier"] for r in by_hour if r["payload"]["stripe_customer_id"] == f"cus_Acme{RUN}"} == {
        f"spendstream:{m}:cus_Acme{RUN}:2024-11-02T{h}" for m in ("ai_spend", "ai_tokens") for h in ("10", "13")}
    with pytest.raises(ValueError, match="not the start of a day"):
        stripe_meter_events(stored, meters, since=DAY.replace(hour=5), until=NEXT)


def test_a_price_book_mistake_is_named_with_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "book.yaml"
    path.write_text("prices:\n  - id: a\n    markup_percent: 10\n    effective_from: 2026-01-01T10:30:00Z\n"
                    "  - id: b\n    effective_from: 2026-01-01\n"
                    "  - id: c\n    customer: x\n    plan: y\n    markup_percent: 5\n    effective_from: 2026-01-01\n"
                    "customers:\n  acme: {stripe_customer_id: acme}\n")
    with pytest.raises(PriceBookError) as caught:
        load_pricebook(path)
    lines = sorted(str(caught.value).splitlines(), key=lambda line: int(line.split(":")[1]))
    assert len(lines) == 4, lines  # every mistake at once
    assert lines[0].startswith(f"{path}:4: prices.0.effective_from: Value error, must be a date or a whole UTC hour")
    assert lines[1].startswith(f"{path}:5: prices.1: Value error, give exactly one of markup_percent and sell")
    assert lines[2].startswith(f"{path}:7: prices.2: Value error, give customer or plan, not both")
    assert lines[3].startswith(f"{path}:13: customers.acme.stripe_customer_id: String should match pattern")


@pytest.mark.parametrize(("glob", "model", "matches"), [("gpt-4o*", "gpt-4o-mini", True), ("gpt-4o*", "gpt-4", False),
                                                        ("*", "anything", True), ("a.b?", "a.bc", True),
                                                        ("a.b?", "axbc", False)])
def test_globs_become_anchored_patterns(glob: str, model: str, matches: bool) -> None:
    import re

    assert (re.fullmatch(glob_regex(glob), model) is not None) is matches


@pytest.mark.integration
def test_the_cli_loads_the_book_and_exports_stripe_json_lines(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSTREAM_")}
    env["SPENDSTREAM_DATA_DIR"] = str(tmp_path / "data")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "spendstream", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    none = cli("export", "stripe", "--since", "2024-11-02", "--until", "2024-11-03")
    assert none.returncode == 2 and "pricebook load" in none.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("prices:\n  - id: a\n    effective_from: 2026-01-01\n")
    refused = cli("pricebook", "load", str(bad))
    assert refused.returncode == 2 and f"{bad}:2: prices.0: Value error, give exactly one" in refused.stderr
    loaded = cli("pricebook", "load", str(_book(tmp_path)))
    assert loaded.returncode == 0 and "3 rule(s), 3 customer(s), now current as sha256:" in loaded.stdout
    events = [_event(1, "acme", "gpt-4o", 10), _event(3, "globex", "gpt-4o", 13), _event(4, "initech", "gpt-4o", 13)]
    stored = subprocess.run([sys.executable, "-c", _STORE, str(tmp_path / "data")], input="\n".join(
        e.model_dump_json() for e in events), env=env, capture_output=True, text=True, timeout=120)
    assert stored.returncode == 0, stored.stderr
    out = tmp_path / "meter_events.jsonl"
    exported = cli("export", "stripe", "--since", "2024-11-02", "--until", "2024-11-03", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["identifier"], r["payload"]["value"]) for r in records] == [
        (f"spendstream:ai_spend:cus_Acme{RUN}:2024-11-02", "374"),  # $3.7375: enterprise +15 %
        (f"spendstream:ai_tokens:cus_Acme{RUN}:2024-11-02", "1100000"),
        (f"spendstream:ai_spend:cus_Globex{RUN}:2024-11-02", "422"),
        (f"spendstream:ai_tokens:cus_Globex{RUN}:2024-11-02", "1100000")]
    assert "4 meter event(s)" in exported.stderr
    assert f"customer 'initech-{RUN}' has no stripe_customer_id: 1 attempt(s) not exported" in exported.stderr
    misaligned = cli("export", "stripe", "--since", "2024-11-02T05:00", "--until", "2024-11-03")
    assert misaligned.returncode == 2 and "not the start of a day" in misaligned.stderr


# Events stored into a data directory of its own (one process per directory), as a worker would.
_STORE = """
import asyncio, sys
from pathlib import Path
from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.pricing import Pricer
from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.migrations import migrate
from spendstream.sinks.writer import SinkWriter
store = EmbeddedStore(Path(sys.argv[1]))
migrate(store)
records = [SourceRecord("usage", 0, i, line.encode()) for i, line in enumerate(sys.stdin.read().splitlines())]
asyncio.run(SinkWriter(store).write(process(records, Pricer())))
store.close()
"""
