"""The savings advisor: each recommendation fires on data where it must and stays quiet where it must not."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from spendstream.advisor import advise, caching_potential
from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.emitter.prefix import fingerprint
from spendstream.pricing import Pricer
from spendstream.pricing.deployments import Deployment
from spendstream.schemas.gpu import GpuSample
from spendstream.sinks.rows import deployment_table, gpu_sample_table, usage_table
from spendstream.sinks.store import sql_time

pytestmark = pytest.mark.integration

TRACE = Path(__file__).parent / "fixtures" / "traces" / "mooncake_fast25_synthetic.jsonl"
BLOCK = 512


def _store(store, events: list[dict]) -> None:
    for start in range(0, len(events), 2_000):
        batch = process([SourceRecord("usage", 0, 0, orjson.dumps(events[start:start + 2_000]))], Pricer())
        store.insert_arrow("usage_events", usage_table(batch))


def _kinds(store, since: datetime, until: datetime, feature: str) -> dict[str, object]:
    return {o.kind: o for o in advise(store, since, until) if f"feature={feature}" in o.subject
            or f"deployment={feature}" in o.subject}


def mooncake_events(start: datetime, run: str) -> list[dict]:
    """The Mooncake trace as gpt-4o calls of one feature. Mapping to fingerprints (documented in docs/advisor.md):
    a request's declared static prefix is its longest run of leading 512-token blocks that some other request of
    the trace also starts with; its fingerprint is the hash of those block ids, its length blocks × 512."""
    rows = [json.loads(line) for line in TRACE.read_text().splitlines()]
    starts = Counter(tuple(r["hash_ids"][:i]) for r in rows for i in range(1, len(r["hash_ids"]) + 1))
    events = []
    for n, r in enumerate(rows):
        shared = 0
        while shared < len(r["hash_ids"]) and starts[tuple(r["hash_ids"][:shared + 1])] > 1:
            shared += 1
        event = {"event_id": f"{run}-{n}", "ts": (start + timedelta(milliseconds=r["timestamp"])).isoformat(),
                 "provider": "openai", "model": "gpt-4o", "feature": f"mooncake-{run}",
                 "input_tokens": r["input_length"], "output_tokens": r["output_length"]}
        if shared:
            event |= {"prefix_fingerprint": fingerprint(r["hash_ids"][:shared]), "prefix_tokens": shared * BLOCK}
        events.append(event)
    return events


def test_caching_estimate_on_the_mooncake_trace_matches_a_hand_computation(embedded_store) -> None:
    start, run = datetime(2024, 1, 1, tzinfo=timezone.utc), uuid.uuid4().hex[:6]
    events = mooncake_events(start, run)
    _store(embedded_store, events)
    until = start + timedelta(minutes=20)
    (row,) = [r for r in caching_potential(embedded_store, {"since": sql_time(start), "until": sql_time(until)},
                                           "ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')}")
              if r["feature"] == f"mooncake-{run}"]

    # By hand, from the trace: walk the calls in time order; a call whose prefix was seen within the last
    # 5 minutes (OpenAI's cache lifetime) and is at least 1,024 tokens long reads its whole prefix from cache.
    last_seen: dict[str, datetime] = {}
    repeated = 0
    for e in sorted(events, key=lambda e: (e["ts"], e["event_id"])):
        if "prefix_fingerprint" not in e:
            continue
        ts, fp = datetime.fromisoformat(e["ts"]), e["prefix_fingerprint"]
        if fp in last_seen and ts - last_seen[fp] <= timedelta(minutes=5) and e["prefix_tokens"] >= 1024:
            repeated += e["prefix_tokens"]
        last_seen[fp] = ts
    by_hand = repeated * (Decimal("2.50") - Decimal("1.25")) / 1_000_000  # gpt-4o input vs cached input, per token

    assert row["repeated_prefix_tokens"] == repeated
    assert abs(row["saving_usd"] - by_hand) <= by_hand / 100
    assert by_hand > 40  # about $41.79 in the trace's 17 minutes

    found = _kinds(embedded_store, start, until, f"mooncake-{run}")
    assert found["prompt_caching"].confidence == "high"
    assert found["prompt_caching"].monthly_saving_usd > 50_000  # 17 minutes scaled to a month


def test_caching_stays_quiet_when_the_prefix_is_already_cached_or_calls_are_far_apart(embedded_store) -> None:
    start, run = datetime(2024, 2, 1, tzinfo=timezone.utc), uuid.uuid4().hex[:6]
    common = {"provider": "openai", "model": "gpt-4o", "input_tokens": 5_000, "output_tokens": 10,
              "prefix_fingerprint": fingerprint("system prompt " + run), "prefix_tokens": 4_000}
    cached = [common | {"event_id": f"{run}-c{i}", "feature": f"cached-{run}", "cached_input_tokens": 4_000,
                        "ts": (start + timedelta(seconds=10 * i)).isoformat()} for i in range(50)]
    sparse = [common | {"event_id": f"{run}-s{i}", "feature": f"sparse-{run}",
                        "ts": (start + timedelta(minutes=10 * i)).isoformat()} for i in range(50)]
    short = [common | {"event_id": f"{run}-p{i}", "feature": f"short-{run}", "prefix_tokens": 800,
                       "ts": (start + timedelta(seconds=10 * i)).isoformat()} for i in range(50)]
    _store(embedded_store, cached + sparse + short)
    until = start + timedelta(hours=9)
    for feature in ("cached", "sparse", "short"):
        assert "prompt_caching" not in _kinds(embedded_store, start, until, f"{feature}-{run}"), feature


def _day_of_calls(run: str, feature: str, day: datetime, *, n: int = 200, **fields) -> list[dict]:
    return [{"event_id": f"{run}-{feature}-{i}", "provider": "openai", "model": "gpt-4o",
             "feature": f"{feature}-{run}", "ts": (day + timedelta(minutes=7 * i)).isoformat(),
             "input_tokens": 800, "output_tokens": 60} | fields for i in range(n)]


def test_batch_fires_for_declared_and_bursty_features_not_for_interactive_ones(embedded_store) -> None:
    day, run = datetime(2024, 3, 1, tzinfo=timezone.utc), uuid.uuid4().hex[:6]
    declared = _day_of_calls(run, "nightly", day, tags={"latency_sensitive": "false"})
    bursty = [e | {"ts": (day + timedelta(hours=2, seconds=i)).isoformat()}
              for i, e in enumerate(_day_of_calls(run, "report-gen", day))]
    interactive = _day_of_calls(run, "chat", day, tags={"user_facing": "true"})
    _store(embedded_store, declared + bursty + interactive)
    until = day + timedelta(days=1)
    nightly = _kinds(embedded_store, day, until, f"nightly-{run}")["batch"]
    # 200 calls × (800 × $2.50 + 60 × $10) per million = $0.52; half of it, scaled from one day to 30
    assert nightly.period_saving_usd == Decimal("0.26") and nightly.monthly_saving_usd == Decimal("7.80")
    assert nightly.confidence == "high"
    assert _kinds(embedded_store, day, until, f"report-gen-{run}")["batch"].confidence == "medium"
    assert "batch" not in _kinds(embedded_store, day, until, f"chat-{run}")


def test_right_size_for_short_calls_on_a_frontier_model_only(embedded_store) -> None:
    day, run = datetime(2024, 4, 1, tzinfo=timezone.utc), uuid.uuid4().hex[:6]
    short = _day_of_calls(run, "classify", day, tags={"user_facing": "true"})
    long = _day_of_calls(run, "essay", day, input_tokens=20_000, output_tokens=2_000, tags={"user_facing": "true"})
    small = _day_of_calls(run, "tiny", day, model="gpt-4o-mini", tags={"user_facing": "true"})
    _store(embedded_store, short + long + small)
    until = day + timedelta(days=1)
    found = _kinds(embedded_store, day, until, f"classify-{run}")["right_size"]
    # gpt-4o $0.52 → gpt-4o-mini 200 × (800 × $0.15 + 60 × $0.60) / 1M = $0.0312
    assert found.period_saving_usd == Decimal("0.52") - Decimal("0.0312")
    assert found.confidence == "low" and "QUALITY CHECK" in found.assumptions
    assert "right_size" not in _kinds(embedded_store, day, until, f"essay-{run}")
    assert "right_size" not in _kinds(embedded_store, day, until, f"tiny-{run}")


def test_output_cap_for_a_long_uncapped_tail_only(embedded_store) -> None:
    day, run = datetime(2024, 5, 1, tzinfo=timezone.utc), uuid.uuid4().hex[:6]
    tail = [e | {"output_tokens": 8_000 if i % 50 == 0 else 100} for i, e in
            enumerate(_day_of_calls(run, "tail", day, tags={"user_facing": "true"}))]
    capped = [e | {"max_tokens": 8_000} for e in tail]
    for e in capped:
        e["event_id"] += "-capped"
        e["feature"] = f"capped-{run}"
    _store(embedded_store, tail + capped)
    until = day + timedelta(days=1)
    found = _kinds(embedded_store, day, until, f"tail-{run}")["output_cap"]
    assert found.period_saving_usd > 0 and "p99" in found.evidence
    assert "output_cap" not in _kinds(embedded_store, day, until, f"capped-{run}")


def test_retry_waste_counts_failed_attempts(embedded_store) -> None:
    day, run = datetime(2024, 6, 1, tzinfo=timezone.utc), uuid.uuid4().hex[:6]
    flaky = [e | ({"status": "timeout"} if i % 5 == 0 else {}) for i, e in
             enumerate(_day_of_calls(run, "flaky", day, tags={"user_facing": "true"}))]
    solid = _day_of_calls(run, "solid", day, tags={"user_facing": "true"})
    _store(embedded_store, flaky + solid)
    until = day + timedelta(days=1)
    found = _kinds(embedded_store, day, until, f"flaky-{run}")["retry_waste"]
    assert found.period_saving_usd == Decimal("0.52") / 5 and "40 timeouts" in found.evidence
    assert "retry_waste" not in _kinds(embedded_store, day, until, f"solid-{run}")


def test_idle_gpus_are_found_when_the_peak_fits_on_fewer(embedded_store) -> None:
    day, run = datetime(2024, 7, 1, tzinfo=timezone.utc), uuid.uuid4().hex[:6]
    deployments = [Deployment(name=f"{name}-{run}", gpu_type="H100", gpu_count=8, usd_per_gpu_hour=Decimal("2"))
                   for name in ("quiet", "busy")]
    embedded_store.insert_arrow("gpu_deployments", deployment_table(deployments))
    samples = [GpuSample(sample_id=f"{run}-{name}-{m}", ts=day + timedelta(minutes=m + 1), interval_s=60,
                         deployment=f"{name}-{run}", gpu_utilization=utilisation)
               for name, utilisation in (("quiet", 0.2), ("busy", 0.9)) for m in range(600)]
    embedded_store.insert_arrow("gpu_samples", gpu_sample_table(samples))
    until = day + timedelta(days=1)
    found = _kinds(embedded_store, day, until, f"quiet-{run}")["idle_gpu"]
    # p95 20 % of 8 GPUs fits on 2 at 80 %: 6 spare GPUs × 10 h × $2
    assert found.period_saving_usd == Decimal(120) and "60.0 GPU-hours spare" in found.evidence
    assert "idle_gpu" not in _kinds(embedded_store, day, until, f"busy-{run}")


def test_monthly_numbers_follow_the_traffic_not_the_since_flag(tmp_path) -> None:
    """Two hours of traffic in a fresh store: --since 7d, 2h and 1h give the same monthly saving (scaled by
    the observed span, not by the period asked for), and a user-facing feature whose two hours look
    like a burst inside a week is not told to use the batch API. (Its own process: chdb opens one data
    directory per process, and the shared store's history starts years ago.)"""
    from tests.conftest import run_in_own_process

    assert run_in_own_process("test_advisor", "span_check", tmp_path / "fresh") == "ok"


def span_check(path: str) -> None:
    from spendstream.sinks.embedded import EmbeddedStore
    from spendstream.sinks.migrations import migrate

    store = EmbeddedStore(path)
    migrate(store)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    start = now - timedelta(hours=2)
    calls = [{"event_id": f"s-{i}", "provider": "openai", "model": "gpt-4o",
              "ts": (start + timedelta(seconds=30 * i)).isoformat(), "input_tokens": 800, "output_tokens": 60,
              "feature": "support-chat",
              "tags": {"user_facing": "true", "latency_sensitive": "false"},
              "status": "timeout" if i % 5 == 0 else "ok"} for i in range(240)]
    _store(store, calls)
    monthly = {}
    for label, since in (("7d", now - timedelta(days=7)), ("2h", start), ("1h", now - timedelta(hours=1))):
        found = {o.kind: o for o in advise(store, since, now)}
        assert "batch" not in found, (label, found["batch"])  # user-facing: never batch
        monthly[label] = found["retry_waste"].monthly_saving_usd
    # 48 timeouts × (800 × $2.50 + 60 × $10) / 1M = $0.1248 in 2 h; × 360 to a month
    assert monthly["7d"] == monthly["2h"] == Decimal("44.93"), monthly
    assert abs(monthly["1h"] - monthly["2h"]) <= Decimal("0.5"), monthly  # half the calls, twice the scale
    store.close()
    print("ok")


def test_token_buckets_agree_between_sql_and_python_and_quantiles_are_bucket_edges(embedded_store) -> None:
    """A count is in bucket k exactly when it is at most bucket_edge(k) and above bucket_edge(k - 1): the
    output cap's saving (whole buckets above the cap) relies on it."""
    from spendstream.sinks.shapes import bucket_edge, quantile_edge, token_bucket

    counts = sorted({*range(0, 3_000), *(2 ** p + d for p in range(12, 25) for d in (-1, 0, 1)),
                     *(bucket_edge(k) + d for k in range(100) for d in (0, 1))})
    buckets = embedded_store.query(f"SELECT groupArray({token_bucket('n')}) FROM "
                                   f"(SELECT arrayJoin({counts}) AS n)").scalar()
    for n, k in zip(counts, buckets, strict=True):
        assert n <= bucket_edge(k) and (k == 0 or n > bucket_edge(k - 1)), (n, k)
    histogram = {40: 50, 44: 45, 52: 5}  # 50 calls ≤ 1,024 tokens, 45 ≤ 2,048, 5 ≤ 8,192
    assert [quantile_edge(histogram, q) for q in (0.5, 0.95, 0.96, 0.99)] == [1024, 2048, 8192, 8192]
    assert quantile_edge({}, 0.5) == 0


def test_prefix_windows_are_no_longer_than_any_cache_lifetime() -> None:
    """The caching estimate from prefix_windows counts every call of a window but its first as a hit in
    time: that is exact only while a window is no longer than every provider's cache lifetime."""
    from spendstream.advisor import CACHE_RULES
    from spendstream.sinks.shapes import PREFIX_WINDOWS

    assert all(ttl_s >= PREFIX_WINDOWS.step.total_seconds() for _, ttl_s in CACHE_RULES.values()), CACHE_RULES


def test_equal_savings_come_back_in_the_same_order_every_run(embedded_store) -> None:
    """Features with the same traffic save the same: ranked by lever and subject after the saving, not by the order
    ClickHouse's threads return their rows (a report compared with itself differed there)."""
    day, run = datetime(2024, 7, 1, tzinfo=timezone.utc), uuid.uuid4().hex[:6]
    names = [f"twin{k}" for k in (3, 1, 4, 2)]
    _store(embedded_store, [e | ({"status": "timeout"} if i % 5 == 0 else {}) for name in names
                            for i, e in enumerate(_day_of_calls(run, name, day, tags={"user_facing": "true"}))])
    until = day + timedelta(days=1)
    mine = [(o.kind, o.subject, o.monthly_saving_usd) for o in advise(embedded_store, day, until) if run in o.subject]
    assert [subject for kind, subject, _ in mine if kind == "retry_waste"] == [
        f"feature=twin{k}-{run}" for k in (1, 2, 3, 4)]
    assert mine == sorted(mine, key=lambda o: (-o[2], o[0], o[1]))
