"""Every published payload in tests/fixtures/metrics, served over HTTP and scraped twice: what it says is read,
and what it does not say is absent (None), never 0. A new fixture file without a row here fails."""

from __future__ import annotations

import pytest

from tests.test_gpu_exporter import FIXTURES, fixture
from tests.test_gpu_exporter import server as server  # noqa: PLC0414 - a fixture, re-exported for pytest

EXPECTED = {  # file: (engine, model, running, waiting, KV mean)
    "vllm_v1_kserve_workshop_llama_vllm_single.txt": ("vllm", "llama-vllm-single", 0.0, 0.0, 0.0),
    "vllm_v1_docs_design_metrics_snippet.txt": ("vllm", "meta-llama/Llama-3.1-8B-Instruct", 8.0, None, None),
    "vllm_v0_7_to_v0_9_docs_usage_metrics_snippet.txt": ("vllm", "unsloth/Llama-3.2-1B-Instruct", None, None, None),
    "vllm_v0_5_v0_6_issue8819_excerpt.txt": ("vllm", "facebook/opt-125m", None, None, None),
    "sglang_v0_4_docs_production_metrics.txt": ("sglang", "meta-llama/Llama-3.1-8B-Instruct", 162.0, 2826.0, 0.28),
    "triton_trtllm_backend_readme_inflight_batcher.txt": ("triton", "tensorrt_llm", 0.0, 1.0, 0.4875),
}
DCGM = ("dcgm_exporter_readme_snippet.txt", "dcgm_exporter_v100_issue250_excerpt.txt")


def test_every_fixture_has_a_row_here() -> None:
    assert {p.name for p in FIXTURES.glob("*.txt")} == set(EXPECTED) | set(DCGM)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_published_engine_payload(server, name: str) -> None:
    from tests.test_gpu_engine_layouts import scrape_twice

    sample = scrape_twice(server, {"/m": [fixture(name)]})
    engine, model, running, waiting, kv = EXPECTED[name]
    assert (sample.engine, sample.model, sample.running_requests, sample.waiting_requests,
            sample.kv_cache_utilization) == (engine, model, running, waiting, kv)
    assert sample.dropped_readings is None
    if name.startswith("triton"):
        assert sample.prompt_tokens_delta is None  # no token counters: absent, not 0


@pytest.mark.parametrize("name", DCGM)
def test_published_dcgm_payload(server, name: str) -> None:
    from tests.test_gpu_engine_layouts import _vllm_pair, scrape_twice

    sample = scrape_twice(server, {"/m": _vllm_pair(), "/dcgm": [fixture(name)]}, dcgm_url=server.url("/dcgm"),
                          gpu_count=None)
    assert sample.dropped_readings is None
    if name == "dcgm_exporter_readme_snippet.txt":  # clocks and temperature only
        assert (sample.gpu_utilization, sample.gpu_power_w, sample.gpu_count) == (None, None, None)
    else:
        # the excerpt ends after GPU 0's utilisation: a real 0 %, read, for the one GPU it shows
        assert (sample.gpu_utilization, sample.gpu_count) == (0.0, 1)
