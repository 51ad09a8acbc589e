"""GPU cost on the allocation and usage bases, split input/output, prefix-cache savings, per consumer, exact.

Real chdb (the shared embedded store): samples as the worker stores them, usage
events priced and stored as the worker stores them, and the views read back.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.pricing import Pricer
from spendstream.pricing.deployments import Deployment
from spendstream.schemas.gpu import GpuSample
from spendstream.sinks.gpu_prices import sync_prices
from spendstream.sinks.rows import deployment_table, gpu_sample_table, usage_table
from tests.test_gpu_exporter import server  # noqa: F401 - a fixture

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def deployment(embedded_store) -> str:
    name = f"bases-{uuid.uuid4().hex[:8]}"
    d = Deployment(name=name, gpu_type="H100", gpu_count=2, usd_per_gpu_hour=Decimal("2.40"),
                   prefill_cost_multiplier=Decimal(4))
    embedded_store.insert_arrow("gpu_deployments", deployment_table([d]))
    sync_prices(embedded_store, {name: d})
    return name


def _samples(store, name: str, minute: int, **fields) -> None:
    """Two 30 s samples in ``minute``, each carrying half of ``fields``' counts."""
    half = {k: (v // 2 if isinstance(v, int) else v / 2) if k.endswith("_delta") else v for k, v in fields.items()}
    store.insert_arrow("gpu_samples", gpu_sample_table([
        GpuSample(ts=T0 + timedelta(minutes=minute, seconds=s), interval_s=30, deployment=name, **half)
        for s in (20, 50)]))


def _usage(store, name: str, minute: int, *rows: tuple[str, str, int, int]) -> None:
    events = [{"event_id": f"{name}-{minute}-{i}", "ts": (T0 + timedelta(minutes=minute, seconds=5)).isoformat(),
               "provider": "self-hosted", "model": "llama-3-70b", "deployment": name, "team": team,
               "customer": customer, "input_tokens": tokens_in, "output_tokens": tokens_out}
              for i, (team, customer, tokens_in, tokens_out) in enumerate(rows)]
    store.insert_arrow("usage_events", usage_table(process([SourceRecord("u", 0, 0, orjson.dumps(events))],
                                                           Pricer())))


def _bases(store, name: str) -> list[dict]:
    return store.query_arrow("SELECT * FROM gpu_cost_bases_minutely WHERE deployment = {d:String} ORDER BY minute",
                             {"d": name}).to_pylist()


def _consumers(store, name: str) -> list[dict]:
    return store.query_arrow("SELECT * FROM gpu_cost_by_consumer_minutely WHERE deployment = {d:String} "
                             "ORDER BY minute, team, customer", {"d": name}).to_pylist()


def test_allocation_and_usage_basis_side_by_side_with_the_engines_prefill_decode_split(embedded_store,
                                                                                          deployment) -> None:
    # 10,000 prompt tokens of which 8,000 were prefix-cache hits; prefill 3 s and decode 9 s; GPUs half busy
    _samples(embedded_store, deployment, 0, prompt_tokens_delta=10_000, prompt_tokens_cached_delta=8_000,
             generation_tokens_delta=1_000, prefill_seconds_delta=3.0, decode_seconds_delta=9.0, gpu_utilization=0.5)
    [row] = _bases(embedded_store, deployment)
    assert row["allocation_cost_usd"] == Decimal("0.08")  # 2 GPUs × $2.40/h × 60 s: the bill, idle included
    assert (row["usage_cost_usd"], row["idle_cost_usd"], row["busy_source"]) == (
        Decimal("0.04"), Decimal("0.04"), "gpu_utilization")
    assert (row["gpu_seconds"], row["busy_gpu_seconds"]) == (Decimal(120), Decimal(60))
    assert (row["input_share"], row["input_share_source"]) == (0.25, "engine_phase_time")
    assert (row["input_cost_usd"], row["output_cost_usd"]) == (Decimal("0.02"), Decimal("0.06"))
    # cache hits are not computed: $0.02 over 2,000 computed tokens, and the 8,000 hits saved $0.08
    assert row["input_tokens_computed"] == 2_000
    assert row["usd_per_1m_computed_input_tokens"] == Decimal(10)
    assert row["cache_savings_usd"] == Decimal("0.08")
    assert row["usd_per_1m_output_tokens"] == Decimal(60)


def test_without_phase_times_the_documented_multiplier_splits_input_and_output(embedded_store, deployment) -> None:
    _samples(embedded_store, deployment, 0, prompt_tokens_delta=3_000, generation_tokens_delta=1_000)
    [row] = _bases(embedded_store, deployment)
    assert row["input_share_source"] == "prefill_cost_multiplier"
    assert row["input_share"] == 4 * 3_000 / (4 * 3_000 + 1_000)
    assert row["input_cost_usd"] + row["output_cost_usd"] == row["allocation_cost_usd"]
    assert (row["usage_cost_usd"], row["busy_source"], row["cache_savings_usd"]) == (None, None, None)  # unknown


def test_engine_busy_time_is_the_usage_basis_where_no_gpu_utilisation_is_read(embedded_store, deployment) -> None:
    _samples(embedded_store, deployment, 0, prompt_tokens_delta=100, generation_tokens_delta=100,
             gpu_busy_seconds_delta=15.0)
    [row] = _bases(embedded_store, deployment)
    assert (row["busy_source"], row["busy_fraction"], row["usage_cost_usd"]) == (
        "engine_busy_time", 0.25, Decimal("0.02"))


def test_gpu_seconds_and_cost_per_team_feature_customer_on_both_bases(embedded_store, deployment) -> None:
    _samples(embedded_store, deployment, 0, prompt_tokens_delta=10_000, prompt_tokens_cached_delta=8_000,
             generation_tokens_delta=1_000, prefill_seconds_delta=3.0, decode_seconds_delta=9.0, gpu_utilization=0.5)
    _usage(embedded_store, deployment, 0, ("chat", "acme", 6_000, 300), ("rag", "globex", 4_000, 700))
    _samples(embedded_store, deployment, 1, prompt_tokens_delta=0, generation_tokens_delta=0, gpu_utilization=0.0)
    rows = _consumers(embedded_store, deployment)
    assert [(r["team"], r["customer"]) for r in rows] == [("chat", "acme"), ("rag", "globex"), ("__unallocated__", "")]
    chat, rag, idle = rows
    # input $0.02 by input tokens (60/40), output $0.06 by output tokens (30/70)
    assert (chat["allocation_cost_usd"], rag["allocation_cost_usd"]) == (Decimal("0.03"), Decimal("0.05"))
    assert (chat["usage_cost_usd"], rag["usage_cost_usd"]) == (Decimal("0.015"), Decimal("0.025"))
    assert (chat["gpu_seconds"], rag["gpu_seconds"]) == (Decimal(45), Decimal(75))
    assert (idle["allocation_cost_usd"], idle["usage_cost_usd"]) == (Decimal("0.08"), Decimal(0))


def test_shares_sum_to_each_minutes_totals_to_the_last_digit(embedded_store, deployment) -> None:
    _samples(embedded_store, deployment, 0, prompt_tokens_delta=7_001, generation_tokens_delta=333,
             prefill_seconds_delta=1.0, decode_seconds_delta=2.0, gpu_utilization=0.37)
    _usage(embedded_store, deployment, 0, *[(f"t{i % 3}", f"c{i}", 1_000 + i, 7 * i + 1) for i in range(7)])
    totals = {r["minute"]: r for r in _bases(embedded_store, deployment)}
    rows = _consumers(embedded_store, deployment)
    assert len(rows) == 7
    for column, total in (("allocation_cost_usd", "allocation_cost_usd"), ("usage_cost_usd", "usage_cost_usd"),
                          ("gpu_seconds", "gpu_seconds"), ("busy_gpu_seconds", "busy_gpu_seconds")):
        assert sum(r[column] for r in rows) == totals[rows[0]["minute"]][total], column
    assert len({r["allocation_cost_usd"] for r in rows}) == 7  # a real split, not one key holding it all


def _phase_histograms(prefill_s: float, decode_s: float, created: float = 1776930173.0) -> str:
    """vLLM's request_prefill/decode_time_seconds histograms (vllm/v1/metrics/loggers.py), +Inf bucket only."""
    lines = []
    for phase, total in (("prefill", prefill_s), ("decode", decode_s)):
        name = f"vllm:request_{phase}_time_seconds"
        labels = 'engine="0",model_name="llama-vllm-single"'
        lines += [f"# HELP {name} Histogram of time spent in {phase.upper()} phase for request.",
                  f"# TYPE {name} histogram", f'{name}_bucket{{{labels},le="+Inf"}} 4.0',
                  f"{name}_count{{{labels}}} 4.0", f"{name}_sum{{{labels}}} {total}",
                  f"{name}_created{{{labels}}} {created}"]
    return "\n".join(lines) + "\n"


def test_the_exporter_reads_vllm_phase_times_and_sglang_busy_time(server) -> None:  # noqa: F811
    from tests.test_gpu_engine_layouts import SGLANG, SGLANG_MODEL, add_series, scrape_twice
    from tests.test_gpu_exporter import _vllm, fixture

    vllm = scrape_twice(server, {"/m": [_vllm(0, 0) + _phase_histograms(1.0, 2.0),
                                        _vllm(100, 50) + _phase_histograms(4.0, 11.0)]})
    assert (vllm.prefill_seconds_delta, vllm.decode_seconds_delta) == (3.0, 9.0)

    def sglang(busy: float) -> str:
        return add_series(fixture(SGLANG), "sglang:num_queue_reqs", [
            "# TYPE sglang:gpu_execution_seconds_total counter",
            f'sglang:gpu_execution_seconds_total{{{SGLANG_MODEL},category="forward"}} {busy}'])

    busy = scrape_twice(server, {"/m": [sglang(100.0), sglang(107.5)]})
    assert (busy.gpu_busy_seconds_delta, busy.prefill_seconds_delta) == (7.5, None)
