"""Engine layouts the first exporter got wrong (issue 21), each on a published payload served over HTTP.

Every payload starts from a file in ``tests/fixtures/metrics/`` and adds only what the
engine's own source publishes for the layout under test (series names and labels from
sgl-project/sglang ``python/sglang/srt/metrics/collector.py``, vllm-project/vllm
``vllm/v1/metrics/loggers.py`` and NVIDIA/dcgm-exporter ``internal/pkg/rendermetrics``).
"""

from __future__ import annotations

import re

from tests.test_gpu_exporter import _exporter, fixture, server  # noqa: F401 - ``server`` is a fixture

SGLANG = "sglang_v0_4_docs_production_metrics.txt"
SGLANG_MODEL = 'model_name="meta-llama/Llama-3.1-8B-Instruct"'


def add_series(text: str, name: str, lines: list[str]) -> str:
    """``lines`` inserted after the last sample of ``name``: a family's samples stay together."""
    at = [m.end() for m in re.finditer(rf"^{re.escape(name)}[{{ ].*$", text, flags=re.M)][-1]
    return text[:at] + "\n" + "\n".join(lines) + text[at:]


def scrape_twice(server, payloads: dict[str, list[str]], **exporter_args):  # noqa: F811
    """Serve ``payloads`` by path, scrape twice 10 s apart; the second sample."""
    server.payloads.update(payloads)
    exporter, _, clock = _exporter([server.url("/m")], **exporter_args)
    exporter.scrape_once()
    clock.now += 10.0
    return exporter.scrape_once()


def test_sglang_priority_breakdown_is_not_added_to_the_total(server) -> None:  # noqa: F811
    # --enable-priority-scheduling: the unlabelled total and one series per priority, one family
    text = add_series(fixture(SGLANG), "sglang:num_running_reqs",
                      [f'sglang:num_running_reqs{{{SGLANG_MODEL},priority="0"}} 100.0',
                       f'sglang:num_running_reqs{{{SGLANG_MODEL},priority="1"}} 62.0'])
    text = add_series(text, "sglang:num_queue_reqs",
                      [f'sglang:num_queue_reqs{{{SGLANG_MODEL},priority="0"}} 2000.0',
                       f'sglang:num_queue_reqs{{{SGLANG_MODEL},priority="1"}} 826.0'])
    sample = scrape_twice(server, {"/m": [text]})
    assert (sample.running_requests, sample.waiting_requests) == (162.0, 2826.0)


def test_sglang_priority_breakdown_without_a_total_is_summed(server) -> None:  # noqa: F811
    text = re.sub(r"^sglang:num_running_reqs\{.*$",
                  f'sglang:num_running_reqs{{{SGLANG_MODEL},priority="0"}} 100.0\n'
                  f'sglang:num_running_reqs{{{SGLANG_MODEL},priority="1"}} 62.0', fixture(SGLANG), flags=re.M)
    sample = scrape_twice(server, {"/m": [text]})
    assert sample.running_requests == 162.0


# dcgm-exporter on one H100 cut into three MIG instances (labels as rendered by
# internal/pkg/rendermetrics: GPU_I_PROFILE/GPU_I_ID under MIG, lowercase hostname,
# pod/namespace/container on Kubernetes). Power is the device's, repeated per instance.
H100 = 'gpu="0",UUID="GPU-5b1c2f6e-0d2a-4c39-9b1e-7f3c0a9d2e11",pci_bus_id="00000000:18:00.0",device="nvidia0",' \
       'modelName="NVIDIA H100 80GB HBM3"'
H100_B = 'gpu="1",UUID="GPU-9e7d4a30-61b8-4f0c-a2d5-3c8e1b7f6a42",pci_bus_id="00000000:2A:00.0",device="nvidia1",' \
         'modelName="NVIDIA H100 80GB HBM3"'


def _mig_series(gpu: str, instance: str, profile: str, pod: str) -> str:
    return (f'{gpu},GPU_I_PROFILE="{profile}",GPU_I_ID="{instance}",hostname="gpu-node-7",container="engine",'
            f'namespace="llm",pod="{pod}"')


MIG_PODS = [(H100, "1", "3g.40gb", "llama-70b-6d9f-x2k4q"), (H100, "5", "2g.20gb", "qwen-7b-55c8-p9m3z"),
            (H100, "13", "1g.10gb", "embedder-7b9c-l1v8c"), (H100_B, "1", "7g.80gb", "qwen-7b-55c8-t4n6w")]


def dcgm_mig_payload(*, gr_active: tuple[float, ...] = (0.62, 0.18, 0.05, 0.4)) -> str:
    power = (108.9, 108.9, 108.9, 301.2)
    memory = (3_744, 9_120, 1_024, 40_200)
    lines = ["# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).", "# TYPE DCGM_FI_DEV_POWER_USAGE gauge"]
    lines += [f"DCGM_FI_DEV_POWER_USAGE{{{_mig_series(*s)}}} {p}" for s, p in zip(MIG_PODS, power, strict=True)]
    lines += ["# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).", "# TYPE DCGM_FI_DEV_FB_USED gauge"]
    lines += [f"DCGM_FI_DEV_FB_USED{{{_mig_series(*s)}}} {m}" for s, m in zip(MIG_PODS, memory, strict=True)]
    lines += ["# HELP DCGM_FI_PROF_GR_ENGINE_ACTIVE Ratio of time the graphics engine is active.",
              "# TYPE DCGM_FI_PROF_GR_ENGINE_ACTIVE gauge"]
    lines += [f"DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{_mig_series(*s)}}} {a}"
              for s, a in zip(MIG_PODS, gr_active, strict=True)]
    return "\n".join(lines) + "\n"


def _vllm_pair() -> list[str]:
    from tests.test_gpu_exporter import _vllm

    return [_vllm(0, 0), _vllm(100, 50)]


def test_mig_power_counts_once_per_gpu_and_only_this_deployments_series(server) -> None:  # noqa: F811
    from spendstream.gpu_exporter.dcgm import DcgmFilter

    mine = scrape_twice(server, {"/m": _vllm_pair(), "/dcgm": [dcgm_mig_payload()]}, dcgm_url=server.url("/dcgm"),
                        dcgm_filter=DcgmFilter(pods=("qwen-7b-*",), namespace="llm"))
    assert mine.gpu_memory_used_bytes == (9_120 + 40_200) * 2**20  # not the 3,744 MiB of the llama pod
    assert mine.gpu_power_w == 108.9 + 301.2  # the two GPUs it runs on, each once


def test_mig_without_a_filter_is_the_whole_node_with_power_once_per_gpu(server, caplog) -> None:  # noqa: F811
    node = scrape_twice(server, {"/m": _vllm_pair(), "/dcgm": [dcgm_mig_payload()]}, dcgm_url=server.url("/dcgm"),
                        gpu_count=None)
    assert node.gpu_power_w == 108.9 + 301.2  # was 3 × 108.9 + 301.2: power summed per MIG instance
    assert node.gpu_memory_used_bytes == (3_744 + 9_120 + 1_024 + 40_200) * 2**20
    assert node.gpu_count == 2
    assert any("node-wide" in r.getMessage() for r in caplog.records)


def test_dcgm_filter_by_gpu_uuid(server) -> None:  # noqa: F811
    from spendstream.gpu_exporter.dcgm import DcgmFilter

    only_b = scrape_twice(server, {"/m": _vllm_pair(), "/dcgm": [dcgm_mig_payload()]}, dcgm_url=server.url("/dcgm"),
                          dcgm_filter=DcgmFilter(gpu_uuids=("GPU-9e7d4a30-61b8-4f0c-a2d5-3c8e1b7f6a42",)),
                          gpu_count=None)
    assert (only_b.gpu_power_w, only_b.gpu_memory_used_bytes, only_b.gpu_count) == (301.2, 40_200 * 2**20, 1)


def test_mig_utilisation_comes_from_the_profiling_metric(server) -> None:  # noqa: F811
    from spendstream.gpu_exporter.dcgm import DcgmFilter

    mine = scrape_twice(server, {"/m": _vllm_pair(), "/dcgm": [dcgm_mig_payload(gr_active=(0.62, 0.18, 0.05, 0.4))]},
                        dcgm_url=server.url("/dcgm"), dcgm_filter=DcgmFilter(pods=("qwen-7b-*",)))
    assert mine.gpu_utilization is not None  # MIG publishes no DCGM_FI_DEV_GPU_UTIL
    assert abs(mine.gpu_utilization - (0.18 + 0.4) / 2) < 1e-12


def _sglang_dp(prompt_by_rank: dict[str, float]) -> str:
    """SGLang with data-parallel attention: one series per rank (``dp_rank``), no ``*_created``."""
    base = fixture(SGLANG)
    out = []
    for line in base.splitlines():
        if line.startswith("sglang:prompt_tokens_total{"):
            out += [f'sglang:prompt_tokens_total{{{SGLANG_MODEL},dp_rank="{rank}"}} {value}'
                    for rank, value in prompt_by_rank.items()]
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def test_a_series_first_seen_on_a_known_target_counts_from_zero(server) -> None:  # noqa: F811
    # rank 1 served its first request during the interval: its series appears at 700
    sample = scrape_twice(server, {"/m": [_sglang_dp({"0": 10_000}), _sglang_dp({"0": 10_600, "1": 700})]})
    assert sample.prompt_tokens_delta == 1_300  # was 600: rank 1's first interval was lost


def test_a_newly_watched_target_still_does_not_spike(server) -> None:  # noqa: F811
    from tests.test_gpu_exporter import _exporter

    server.payloads["/a"] = [_sglang_dp({"0": 10_000}), _sglang_dp({"0": 10_600})]
    server.payloads["/b"] = [_sglang_dp({"0": 9_999_999})]
    exporter, _, clock = _exporter([server.url("/a")])
    exporter.scrape_once()
    clock.now += 10.0
    exporter.config.urls = [server.url("/a"), server.url("/b")]  # a second engine added to the watch list
    assert exporter.scrape_once().prompt_tokens_delta == 600


def _vllm_dp(kv: tuple[float, float], prompt: tuple[float, float] = (0, 0)) -> str:
    """vLLM data-parallel: one /metrics with ``engine="0"`` and ``engine="1"`` series (V1 names)."""
    from tests.test_gpu_exporter import _two_engines

    return _two_engines(prompt, kv)


def test_kv_cache_keeps_the_fullest_engine_and_the_saturation_alert_watches_it(server) -> None:  # noqa: F811
    from datetime import timedelta
    from decimal import Decimal

    from spendstream.detect.gpu import KvSaturationDetector
    from spendstream.pricing.deployments import Deployment

    server.payloads["/m"] = [_vllm_dp((0.97, 0.1))]  # the fixture's 3 waiting per engine
    exporter, _, clock = _exporter([server.url("/m")])
    exporter.scrape_once()
    samples = []
    for _ in range(3):
        clock.now += 60.0
        samples.append(exporter.scrape_once())
    assert samples[0].kv_cache_utilization == (0.97 + 0.1) / 2
    assert samples[0].kv_cache_utilization_max == 0.97
    deployment = Deployment(name="llama-70b", gpu_type="H100", gpu_count=2, usd_per_gpu_hour=Decimal(2),
                            saturated_after_minutes=2)
    detector = KvSaturationDetector({"llama-70b": deployment})
    alerts = [a for s in samples for a in detector.observe(s, s.ts + timedelta(seconds=1))]
    assert [a.state for a in alerts] == ["firing"]  # the mean (0.535) would have stayed silent
    assert alerts[0].observed == Decimal("0.97")


VLLM_MODEL = 'model_name="llama-vllm-single"'


def _vllm_by_source(prompt: float, computed: float, cached: float, *, created: float = 1776930173.0) -> str:
    """The V1 payload with vLLM >= 0.11's prompt split (vllm/v1/metrics/loggers.py: prompt_tokens_by_source)."""
    from tests.test_gpu_exporter import _vllm

    text = _vllm(prompt, 0, created=created)
    split = ["# HELP vllm:prompt_tokens_by_source_total Number of prompt tokens by source.",
             "# TYPE vllm:prompt_tokens_by_source_total counter"]
    split += [f'vllm:prompt_tokens_by_source_total{{engine="0",{VLLM_MODEL},source="{src}"}} {value}'
              for src, value in (("local_compute", computed), ("local_cache_hit", cached),
                                 ("external_kv_transfer", 0.0))]
    split += [f'vllm:prompt_tokens_by_source_created{{engine="0",{VLLM_MODEL},source="{src}"}} {created}'
              for src in ("local_compute", "local_cache_hit", "external_kv_transfer")]
    return text + "\n".join(split) + "\n"


def test_vllm_prompt_tokens_split_into_computed_and_cached(server) -> None:  # noqa: F811
    sample = scrape_twice(server, {"/m": [_vllm_by_source(0, 0, 0), _vllm_by_source(10_000, 2_000, 8_000)]})
    assert sample.prompt_tokens_delta == 10_000
    assert sample.prompt_tokens_cached_delta == 8_000  # only 2,000 were computed


def test_vllm_without_the_split_leaves_cached_unknown(server) -> None:  # noqa: F811
    from tests.test_gpu_exporter import _vllm

    sample = scrape_twice(server, {"/m": [_vllm(0, 0), _vllm(10_000, 0)]})
    assert (sample.prompt_tokens_delta, sample.prompt_tokens_cached_delta) == (10_000, None)


def test_out_of_range_gauges_cost_only_their_field_are_counted_and_the_loop_goes_on(server) -> None:  # noqa: F811
    import threading

    from spendstream.gpu_exporter.dcgm import DcgmFilter
    from tests.test_gpu_exporter import _vllm, set_value

    percent = set_value(_vllm(100, 50), "vllm:kv_cache_usage_perc", 87.58)  # a percentage, not a fraction
    nan = set_value(_vllm(200, 100), "vllm:kv_cache_usage_perc", float("nan"))
    server.payloads["/m"] = [_vllm(0, 0), percent, nan, _vllm(300, 150, kv=0.4)]
    server.payloads["/dcgm"] = [dcgm_mig_payload(gr_active=(0.2, 0.2, 1.0000001, 0.2))]
    exporter, emitted, clock = _exporter([server.url("/m")], dcgm_url=server.url("/dcgm"),
                                         dcgm_filter=DcgmFilter(pods=("embedder-*",)))
    ticks = iter(range(4))

    def stop() -> bool:
        clock.now += 10.0
        return next(ticks, None) is None

    runner = threading.Thread(target=exporter.run, kwargs={"stop": stop})
    exporter.config.interval_s = 0.0
    runner.start()
    runner.join(timeout=30)
    assert not runner.is_alive()
    assert len(emitted) == 3  # every interval after the baseline, none lost
    assert [s.prompt_tokens_delta for s in emitted] == [100, 100, 100]
    assert [s.kv_cache_utilization for s in emitted] == [None, None, 0.4]
    assert all(s.gpu_utilization is None for s in emitted)  # 1.0000001: dropped, not clamped
    assert all(s.gpu_power_w == 108.9 for s in emitted)  # its neighbours survive
    assert emitted[0].dropped_readings == 3  # kv mean, kv max, GPU utilisation
    assert exporter.dropped["kv_cache_utilization"] == 2 and exporter.dropped["gpu_utilization"] == 3


def test_triton_without_a_fraction_derives_it_from_used_and_max_blocks(server) -> None:  # noqa: F811
    text = "\n".join(line for line in fixture("triton_trtllm_backend_readme_inflight_batcher.txt").splitlines()
                     if 'kv_cache_block_type="fraction"' not in line) + "\n"
    sample = scrape_twice(server, {"/m": [text]})
    assert sample.kv_cache_utilization == 1 / 6239  # used 1 of max 6239 blocks
    assert sample.model == "tensorrt_llm"


def test_the_model_is_read_from_any_series_of_the_engine_or_given(server) -> None:  # noqa: F811
    from tests.test_gpu_exporter import TGI, _vllm

    # before the first request vLLM may publish neither gauge nor counter the old reader looked at
    sparse = [re.sub(r"^vllm:(num_requests_running|prompt_tokens_total)\{.*\n", "", _vllm(n, 0), flags=re.M)
              for n in (0, 10)]
    assert scrape_twice(server, {"/m": sparse}).model == "llama-vllm-single"
    tgi = [TGI.format(count=1, prompt=10, generated=5), TGI.format(count=2, prompt=20, generated=9)]
    server.payloads["/m"] = tgi
    assert scrape_twice(server, {"/m": list(tgi)}).model is None  # TGI's metrics name no model
    assert scrape_twice(server, {"/m": list(tgi)}, model="mistral-7b").model == "mistral-7b"


def test_once_exits_non_zero_when_the_sample_was_not_delivered(server, tmp_path) -> None:  # noqa: F811
    import os
    import socket
    import subprocess
    import sys

    from tests.test_gpu_exporter import _vllm

    with socket.socket() as s:  # a port nothing listens on: Kafka is down
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    server.payloads["/metrics"] = [_vllm(0, 0), _vllm(500, 100)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSTREAM_")}
    env |= {"SPENDSTREAM_KAFKA_BOOTSTRAP": dead, "SPENDSTREAM_GPU_TOPIC": "gpu-undelivered"}
    result = subprocess.run([sys.executable, "-m", "spendstream", "gpu-exporter", "--deployment", "d1", "--no-nvml",
                             "--url", server.url("/metrics"), "--interval", "0.2", "--once", "--delivery-timeout", "3"],
                            env=env, capture_output=True, text=True, timeout=90)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "NOT delivered" in result.stderr
