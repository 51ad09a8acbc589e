"""Top spenders from kept day lists (``key_lists``, migration 34) equals the same question of raw events, to the digit.

The reference is the question asked of ``usage_events FINAL`` itself (keys with something priced, their priced
cost summed, ties broken by the names), and the cookbook's former grouping of ``customer_hourly``. Asked before the
maintainer ran (every day pending: grouped whole), after it (from the lists, checked to be so, with keys the lists
do not hold), after a late event and after re-pricing (pending, then maintained), with duplicates and a conflicting
re-send, and on days where the lists cannot settle it (every key summed). Real chdb (the session's shared
store); months 2023-05 and 2023-07 are this file's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.pricing import Pricer
from spendstream.sinks import migrations, rollups
from spendstream.sinks.key_lists import LIST_LENGTH, TOP_SPENDERS, TOP_SPENDERS_SETTLED
from spendstream.sinks.rows import usage_table

pytestmark = pytest.mark.integration

DAY = datetime(2023, 5, 10, tzinfo=timezone.utc)
KEYS_A_DAY = LIST_LENGTH + 300  # more than a list holds: some keys are bounded, not listed
RAW = """SELECT team, feature, customer, sumIf(total_cost, priced) AS cost_usd FROM usage_events FINAL
         WHERE ts >= toDateTime({since:Date}, 'UTC') AND ts < toDateTime({until:Date}, 'UTC')
         GROUP BY team, feature, customer HAVING count() > countIf(NOT priced)
         ORDER BY cost_usd DESC, team, feature, customer LIMIT {top:UInt32}"""
COOKBOOK_BEFORE = """SELECT team, feature, customer, sum(cost_usd) AS cost_usd
         FROM customer_hourly(since = {since:Date}, until = {until:Date}) GROUP BY team, feature, customer
         HAVING sum(attempts) > sum(unpriced_attempts) ORDER BY cost_usd DESC, team, feature, customer
         LIMIT {top:UInt32}"""
LISTS = TOP_SPENDERS  # the cookbook's
BOUND = TOP_SPENDERS_SETTLED  # settled, floor, unlisted, listed_end


def _key(i: int) -> dict:
    return {"team": None if i % 97 == 5 else f"t{i % 3}", "feature": f"f{i % 7}",
            "customer": None if i % 89 == 0 else f"c{i}"}


def _events(day: datetime, tag: str, tokens: Callable[[int], int], *, big: int = 15, flat: bool = False
            ) -> list[dict]:
    """One event per key across the day, two for the ``big`` first; ``tokens(i)`` input tokens for key ``i``
    (``flat``: the same output tokens for every key, else a few more for some)."""
    events = []
    for i in range(KEYS_A_DAY):
        for j in range(2 if i < big else 1):
            events.append({"event_id": f"{tag}-{day:%m%d}-{i}-{j}", "ts": (day + timedelta(seconds=61 * i + 7 * j))
                           .isoformat(), "provider": "openai", "model": "gpt-4o-mini", **_key(i),
                           "input_tokens": tokens(i), "output_tokens": 10 if i < big or flat else 10 + i % 13})
    return events


def _store(store, events: list[dict]) -> None:
    store.insert_arrow("usage_events", usage_table(process([SourceRecord("u", 0, 0, orjson.dumps(events))],
                                                           Pricer())))


def _maintain(store) -> None:
    rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=100_000, quiet_s=0, busy_every_s=0)


def _asked(store, ranges: list[tuple[date, date, int]]) -> list[bool]:
    """Each range's Top spenders from the lists equal to raw's and the former cookbook's; whether the lists
    settled it (else the full grouping answered)."""
    settled = []
    for since, until, top in ranges:
        p = {"since": str(since), "until": str(until), "top": top}
        raw = store.query(RAW, p).rows
        assert len(raw) == top, f"too few keys for {p}"
        assert store.query(LISTS, p).rows == raw, f"top_spenders, {p}"
        assert store.query(COOKBOOK_BEFORE, p).rows == raw, f"customer_hourly, {p}"
        settled.append(bool(store.query(BOUND, p).rows[0][0]))
    return settled


def test_top_spenders_equals_raw_through_late_events_resends_and_repricing(embedded_store) -> None:
    store = embedded_store
    days = [DAY + timedelta(days=d) for d in range(3)]
    events = []
    for d, day in enumerate(days):
        # fifteen big keys, their order changing by the day (keys 3 and 4 tie), and many small ones
        events += _events(day, "big", lambda i, d=d: 200_000 + 7_919 * (((3 if i == 4 else i) * (d + 2)) % 15)
                          if i < 15 else 100 + (i * 37) % 1_000)
    events.append({**events[100], "event_id": "unpriced-0510", "model": "my-own-llama", "provider": "self-hosted",
                   "team": "t-unpriced", "input_tokens": 9_000_000})  # unpriced only: no row of the answer
    _store(store, events)
    _store(store, events[::7])  # re-delivered
    _store(store, [{**events[3], "input_tokens": 5_000_000, "customer": "conflict"}])  # a conflicting re-send
    d0 = DAY.date()
    ranges = [(d0, d0 + timedelta(days=1), 10), (d0 + timedelta(days=1), d0 + timedelta(days=2), 10),
              (d0, d0 + timedelta(days=3), 10), (d0, d0 + timedelta(days=3), 4), (d0, d0 + timedelta(days=3), 20)]
    _asked(store, ranges)  # nothing maintained: every day grouped whole

    _maintain(store)
    assert store.query("SELECT count() FROM key_day_tops FINAL WHERE day >= '2023-05-10' AND day < '2023-05-13'"
                       ).scalar() == 3 * LIST_LENGTH
    assert all(_asked(store, ranges)), "settled by the lists"
    unlisted = store.query(BOUND, {"since": str(d0), "until": str(d0 + timedelta(days=3)), "top": 10}).rows[0][2]
    assert unlisted > 0, "every day holds keys its list does not"

    # a late event makes an unlisted small key of the middle day the largest of the three days
    _store(store, [{"event_id": "late-0511", "ts": (days[1] + timedelta(hours=20)).isoformat(), "provider": "openai",
                    "model": "gpt-4o-mini", **_key(1_250), "input_tokens": 3_000_000, "output_tokens": 1}])
    assert store.query(RAW, {"since": str(d0), "until": str(d0 + timedelta(days=3)), "top": 1}).rows[0][2] == "c1250"
    # pending: the middle day and after are open rows, grouped whole and added to the first day's lists
    assert _asked(store, ranges)[2:] == [True, True, True], "settled with open rows added"
    _maintain(store)
    assert all(_asked(store, ranges)), "the middle day's list rewritten"

    # re-pricing: a model without a price gets one, and its key becomes the largest
    from spendstream.pricing.overrides import Override, OverrideSet, TokenPrices
    from spendstream.reprice import reprice

    priced = OverrideSet((Override(id="own-llama", provider="self-hosted", model="my-own-llama",
                                   effective_from=DAY - timedelta(days=30),
                                   prices=TokenPrices(input=Decimal("5"), output=Decimal("5"))),), "test")
    assert reprice(store, Pricer(priced), DAY, DAY + timedelta(days=3)).changed == 1
    assert store.query(RAW, {"since": str(d0), "until": str(d0 + timedelta(days=1)), "top": 1}).rows[0][0] \
        == "t-unpriced"
    _asked(store, ranges)
    _maintain(store)
    assert all(_asked(store, ranges)), "the re-priced day's list rewritten"


def test_top_spenders_falls_back_to_the_full_grouping_when_the_lists_cannot_settle_it(embedded_store) -> None:
    store = embedded_store
    days = [datetime(2023, 7, 11, tzinfo=timezone.utc), datetime(2023, 7, 12, tzinfo=timezone.utc)]
    # every key costs the same: the tenth known cost equals what an unlisted key may cost
    _store(store, [e for day in days for e in _events(day, "flat", lambda i: 5_000, big=0, flat=True)])
    _maintain(store)
    d0 = days[0].date()
    ranges = [(d0, d0 + timedelta(days=1), 10), (d0, d0 + timedelta(days=2), 10)]
    assert _asked(store, ranges) == [False, False], "not settled: the full grouping answered"
    # one key far above the rest settles the top one, not the top ten
    _store(store, [{"event_id": "flat-big", "ts": (days[0] + timedelta(hours=3)).isoformat(), "provider": "openai",
                    "model": "gpt-4o-mini", **_key(7), "input_tokens": 900_000, "output_tokens": 1}])
    _maintain(store)
    assert _asked(store, [(d0, d0 + timedelta(days=2), 1), (d0, d0 + timedelta(days=2), 10)]) == [True, False]


def test_a_store_with_data_upgrades_to_the_lists_with_identical_answers(tmp_path) -> None:
    from tests.conftest import run_in_own_process

    report = orjson.loads(run_in_own_process("test_top_spenders_lists", "upgrade_check", tmp_path / "old"))
    assert len(report["before"]) == 10, "a comparison of nothing"
    assert report["lists"] == report["before"], "backfilled: read from the lists"
    assert report["settled"] == [1, "2023-07-23 00:00:00"], "from the lists, every day of the range"
    assert report["maintained"] == report["before"]


def upgrade_check(path: str) -> None:
    """A store at migration 33 with three days of usage (2023-07) migrated to 35: the cookbook's grouping before,
    the lists after (backfilled and recorded done, so read from them), and after a maintainer's pass."""
    from spendstream.sinks.embedded import EmbeddedStore

    store = EmbeddedStore(path)
    every = migrations.MIGRATIONS
    migrations.MIGRATIONS = tuple(m for m in every if m.version < 34)  # main's
    migrations.migrate(store)
    days = [datetime(2023, 7, 20 + d, tzinfo=timezone.utc) for d in range(3)]
    events = [e for d, day in enumerate(days) for e in _events(
        day, "up", lambda i, d=d: 300_000 + 1_009 * ((i * (d + 3)) % 15) if i < 15 else 100 + (i * 41) % 900)]
    _store(store, events)
    _store(store, events[::5])  # re-delivered
    p = {"since": "2023-07-20", "until": "2023-07-23", "top": 10}
    before = [store.query(RAW, p).rows, store.query(COOKBOOK_BEFORE, p).rows]
    assert before[0] == before[1]
    migrations.MIGRATIONS = every
    assert {34, 35} <= set(migrations.migrate(store))
    report = {"before": [[str(v) for v in r] for r in before[0]],
              "lists": [[str(v) for v in r] for r in store.query(LISTS, p).rows],
              "settled": [int(v) if i == 0 else str(v) for i, v in enumerate(
                  store.query(BOUND, p).rows[0][::3])]}
    _maintain(store)
    report["maintained"] = [[str(v) for v in r] for r in store.query(LISTS, p).rows]
    store.close()
    print(orjson.dumps(report).decode())


def test_the_cookbook_asks_top_spenders_from_the_lists() -> None:
    """docs/sql.md's Top spenders is the query these tests hold to raw (the grouping follows it, as a second
    example): one text, so the cookbook cannot drift from what is tested and timed (bench/top_spenders_ab.py)."""
    from tests.test_sql_cookbook import EXAMPLES

    asked = [sql.strip() for title, _, _, sql in EXAMPLES if title.startswith("Top spenders over a period")]
    assert asked[0] == TOP_SPENDERS.strip()
    assert "customer_hourly" in asked[1]
