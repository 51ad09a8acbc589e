"""Every example in docs/sql.md runs against chdb and returns the columns the cookbook documents."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from spendstream.agents.gpu import Deployment
from spendstream.agents.stages import SourceRecord, process
from spendstream.pricing import Pricer
from spendstream.schemas.alert import Alert
from spendstream.schemas.gpu import GpuSample
from spendstream.sinks.rows import alert_table, dead_letter_table, deployment_table, gpu_sample_table, usage_table

pytestmark = pytest.mark.integration

COOKBOOK = Path(__file__).parent.parent / "docs" / "sql.md"
_EXAMPLE = re.compile(r"<!-- columns: (?P<columns>[^>]*) -->\n(?:<!-- params: (?P<params>[^>]*) -->\n)?```sql\n"
                      r"(?P<sql>.*?)```", re.S)


def examples() -> list[tuple[str, list[str], dict[str, str], str]]:
    text = COOKBOOK.read_text()
    found = []
    for match in _EXAMPLE.finditer(text):
        title = text[:match.start()].rstrip().rsplit("### ", 1)[-1].strip()
        params = dict(p.strip().split("=", 1) for p in (match["params"] or "").split(",") if p.strip())
        found.append((title, [c.strip() for c in match["columns"].split(",")], params, match["sql"]))
    return found


EXAMPLES = examples()


def test_the_cookbook_has_an_example_for_each_question() -> None:
    assert len(EXAMPLES) >= 15
    assert len(EXAMPLES) == COOKBOOK.read_text().count("```sql")  # none without its columns line


@pytest.fixture(scope="module")
def seeded(embedded_store):
    """Recent usage with failures and retries, a self-hosted deployment with GPU samples, a dead letter, an alert."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    run = uuid.uuid4().hex[:8]
    events = []
    for i in range(40):
        ts = now - timedelta(hours=1 + i % 5) - (timedelta(days=8) if i % 4 == 0 else timedelta(0))
        events.append({"event_id": f"cook-{run}-{i}", "ts": ts.isoformat(), "request_id": f"cook-{run}-r{i // 2}",
                       "attempt": 1 + i % 2, "status": "rate_limited" if i % 7 == 0 else "ok",
                       "provider": "openai" if i % 3 else "self-hosted",
                       "model": "gpt-4o-mini" if i % 3 else "llama-3-70b", "deployment": None if i % 3 else "cook-llama",
                       "team": ["search", "support"][i % 2], "feature": ["summarise", "chat", "rag"][i % 3],
                       "customer": f"c{i % 4}", "input_tokens": 1_000 * (i + 1), "output_tokens": 100 * (i + 1)})
    batch = process([SourceRecord("usage", 0, 0, orjson.dumps(events))], Pricer())
    embedded_store.insert_arrow("usage_events", usage_table(batch))
    embedded_store.insert_arrow("dead_letters", dead_letter_table(
        process([SourceRecord("usage", 9, 1, b"{not json " + run.encode())], Pricer()).dead_letters))
    embedded_store.insert_arrow("gpu_deployments", deployment_table([Deployment(
        name="cook-llama", gpu_type="L4", gpu_count=1, usd_per_gpu_hour=Decimal("0.8"))]))
    samples = [GpuSample(sample_id=f"cook-{run}-{m}", ts=now - timedelta(hours=2, minutes=-m), interval_s=60,
                         deployment="cook-llama", prompt_tokens_delta=3_000 * m, generation_tokens_delta=500 * m,
                         prompt_tokens_per_s=50.0 * m, generation_tokens_per_s=8.0 * m) for m in range(3)]
    embedded_store.insert_arrow("gpu_samples", gpu_sample_table(samples))
    embedded_store.insert_arrow("alerts", alert_table([Alert(
        kind="unpriced_model", severity="warning", state="firing", subject="provider=self-hosted model=llama-3-70b",
        window_start=now - timedelta(days=1), window_end=now, dedup_key=f"cook-{run}", message="no price",
        created_at=now)]))
    embedded_store.command(
        "INSERT INTO cost_corrections (reprice_id, repriced_at, event_id, ts, old_priced, new_priced, "
        f"old_total_cost, new_total_cost) VALUES ('cook-{run}', now64(3), 'cook-{run}-0', now64(3), 1, 1, 1.5, 1.2)")
    return embedded_store


@pytest.mark.parametrize(("title", "columns", "params", "sql"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_cookbook_example(seeded, title: str, columns: list[str], params: dict[str, str], sql: str) -> None:
    result = seeded.query(sql.strip(), params)
    assert result.columns == columns
    assert result.rows, f"{title!r} returned no rows on the seeded data"
