"""``top_spenders`` (migration 29) against the same question asked of raw ``usage_events FINAL``, on data
where its pruning by customer totals matters: many customers, one whose total is the largest but spread
over many small keys, a tie at the k-th place, a NULL customer, a customer priced only after a re-pricing,
and a late event that reopens a closed day."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson

from spendstream.agents.app import store_usage
from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.pricing import Pricer
from spendstream.pricing.overrides import Override, OverrideSet, TokenPrices
from spendstream.reprice import reprice
from spendstream.sinks import rollups
from spendstream.sinks.writer import SinkWriter

TOPS = (1, 3, 5, 8, 10, 40)
ROLLED = """
    SELECT team, feature, customer, cost_usd
    FROM top_spenders(since = {since:Date}, until = {until:Date}, top = {top:UInt32})
    ORDER BY cost_usd DESC, team, feature, customer"""
RAW = """
    SELECT team, feature, customer, sum(total_cost) AS cost_usd
    FROM usage_events FINAL
    WHERE priced AND ts >= {since:Date} AND ts < {until:Date}
    GROUP BY team, feature, customer
    ORDER BY cost_usd DESC, team, feature, customer
    LIMIT {top:UInt32}"""
CUSTOMERS = """
    SELECT ifNull(customer, '') AS c, sumIf(total_cost, priced) AS total
    FROM usage_events FINAL WHERE ts >= {since:Date} AND ts < {until:Date} GROUP BY c"""


def _write(store, events: list[dict], partition: int = 0) -> None:
    batch = process([SourceRecord("usage", partition, 0, orjson.dumps(events))], Pricer())
    asyncio.run(store_usage(SinkWriter(store), batch))


def _maintain(store) -> None:
    rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=100_000, quiet_s=0, busy_every_s=0)


def _events(run: str, day0: datetime) -> list[dict]:
    events = []

    def add(customer: str | None, feature: str, tokens: int, *, day: int, model: str = "gpt-4o-mini",
            provider: str = "openai", team: str = "t0") -> None:
        i = len(events)
        events.append({"event_id": f"{run}-{i}", "request_id": f"{run}-r{i}", "attempt": 1, "status": "ok",
                       "ts": (day0 + timedelta(days=day, hours=1 + i % 20, seconds=i)).isoformat(),
                       "provider": provider, "model": model, "team": f"{run}-{team}", "feature": f"{run}-{feature}",
                       "customer": None if customer is None else f"{run}-{customer}", "environment": "prod",
                       "input_tokens": tokens, "output_tokens": tokens // 10})

    for c in range(60):  # many customers, one key each, small
        add(f"c{c:02}", f"f{c % 5}", 2_000 + 100 * c, day=c % 3)
    for f in range(40):  # the largest total, spread over forty keys each smaller than the big keys below
        add("whale", f"w{f}", 30_000, day=f % 3)
    for c, tokens in (("big1", 200_000), ("big2", 150_000), ("big3", 120_000)):
        add(c, "f9", tokens, day=1)
    for c in ("tie1", "tie2", "tie3"):  # three keys of one cost, across the 5th place
        add(c, "f8", 100_000, day=2)
    add(None, "f7", 110_000, day=0)  # no customer
    add("", "f7", 5_000, day=0)  # an empty customer, beside the NULL one
    for k in range(5):  # priced only once an override names its model
        add("llama", "f6", 400_000, day=k % 3, model="my-llama", provider="self-hosted")
    add("today", "f5", 90_000, day=3)  # the open day
    return events


def _compare(store, ranges: list[dict]) -> list[str]:
    found = []
    for p in ranges:
        for top in TOPS:
            rolled = store.query(ROLLED, p | {"top": top}).rows
            raw = store.query(RAW, p | {"top": top}).rows
            if rolled != raw:
                found.append(f"{p} top {top}: {rolled} against {raw}")
    return found


def _own(store, run: str, p: dict) -> list[str]:
    """This run's customers in the order of their keys' cost (the store is shared with other tests)."""
    return [c for _, _, c, _ in store.query(RAW, p | {"top": 100_000}).rows if (c or "").startswith(run)]


def test_top_spenders_equal_raw_where_the_pruning_matters(embedded_store) -> None:
    store = embedded_store
    run = f"ts-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc)
    day0 = (now - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    events = [e for e in _events(run, day0) if datetime.fromisoformat(e["ts"]) < now]
    _write(store, events)
    closed = {"since": day0.date().isoformat(), "until": (day0 + timedelta(days=3)).date().isoformat()}
    ranges = [closed, {"since": (day0 + timedelta(days=1)).date().isoformat(), "until": "2100-01-01"},
              {"since": day0.date().isoformat(), "until": (day0 + timedelta(days=1)).date().isoformat()}]

    # the pruning matters here: the largest customer holds none of the top keys, and most customers are
    # below the 5th key's cost (so a top 5 reads a few of them)
    totals = dict(store.query(CUSTOMERS, closed).rows)
    fifth = store.query(RAW, closed | {"top": 5}).rows[-1][3]
    assert max(totals, key=lambda c: totals[c] or 0) == f"{run}-whale"
    assert f"{run}-whale" not in {r[2] for r in store.query(RAW, closed | {"top": 5}).rows}
    assert sum(1 for t in totals.values() if (t or 0) >= fifth) < len(totals) / 4

    assert _compare(store, ranges) == [], "from raw and the hours"
    _maintain(store)
    assert str(store.query("SELECT customer_key_days FROM rollup_watermarks").scalar()) >= closed["until"]
    assert store.query("SELECT count() FROM customer_key_days FINAL WHERE startsWith(customer, {r:String})",
                       {"r": run}).scalar() > 60
    assert _compare(store, ranges) == [], "from the day rollups"

    # a late event reopens a closed day and puts a small customer first
    late = {**events[3], "event_id": f"{run}-late", "request_id": f"{run}-late", "input_tokens": 900_000}
    _write(store, [late])
    assert str(store.query("SELECT customer_key_days FROM rollup_watermarks").scalar()) <= f"{late['ts'][:10]} 00:00:00"
    assert _compare(store, ranges) == [], "a late event pending"
    _maintain(store)
    assert _compare(store, ranges) == [], "a late event recomputed"
    assert _own(store, run, closed)[0] == f"{run}-c03"

    # re-pricing: the self-hosted model gets a price, and its customer a total
    cheap = OverrideSet((Override(id=f"{run}-llama", provider="self-hosted", model="my-llama",
                                  effective_from=day0 - timedelta(days=1),
                                  prices=TokenPrices(input=Decimal("0.5"), output=Decimal("1.5"))),), "test")
    assert reprice(store, Pricer(cheap), day0, day0 + timedelta(days=3)).changed > 0
    assert _compare(store, ranges) == [], "re-priced, pending"
    _maintain(store)
    assert _compare(store, ranges) == [], "re-priced, recomputed"
    assert f"{run}-llama" in _own(store, run, closed)[:3]
