"""The GPU exporter against a real HTTP server on 127.0.0.1 serving published /metrics payloads."""

from __future__ import annotations

import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from spendstream.gpu_exporter.exporter import ExporterConfig, GpuExporter
from spendstream.gpu_exporter.readings import UnknownEngine, detect_engine, read

FIXTURES = Path(__file__).parent / "fixtures" / "metrics"


def fixture(name: str) -> str:
    """A published payload, with the doc-only lines (``...``, the ``curl`` command) dropped."""
    lines = (FIXTURES / name).read_text().splitlines()
    return "\n".join(line for line in lines
                     if line.strip() != "..." and not line.lstrip("$ ").startswith("curl ")) + "\n"


def set_value(text: str, name: str, value: float, **labels: str) -> str:
    """Every sample of ``name`` (whose labels include ``labels``) set to ``value``."""
    def replace(match: re.Match[str]) -> str:
        if all(f'{k}="{v}"' in (match.group(2) or "") for k, v in labels.items()):
            return f"{match.group(1)}{match.group(2) or ''} {value!r}"
        return match.group(0)

    return re.sub(rf"^({re.escape(name)})(\{{[^}}]*\}})? \S+$", replace, text, flags=re.M)


class PayloadServer:
    """Serves, per path, a sequence of payloads: one per GET, the last one repeated."""

    def __init__(self) -> None:
        self.payloads: dict[str, list[str]] = {}
        served = self.payloads

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                queue = served.get(self.path)
                if not queue:
                    self.send_error(404)
                    return
                body = (queue.pop(0) if len(queue) > 1 else queue[0]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def server():
    s = PayloadServer()
    yield s
    s.close()


class Clock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def _exporter(urls: list[str], *, dcgm_url: str | None = None, clock: Clock | None = None,
              use_nvml: bool = False, **config: object) -> tuple[GpuExporter, list, Clock]:
    emitted: list = []
    clock = clock or Clock()
    config = ExporterConfig(**{"deployment": "llama-70b", "urls": urls, "dcgm_url": dcgm_url, "interval_s": 15,
                               "use_nvml": use_nvml, "gpu_type": "H100", "gpu_count": 2} | config)
    return GpuExporter(config, emitted.append, clock=clock), emitted, clock


def _vllm(prompt: float, generation: float, *, created: float = 1776930173.0, kv: float = 0.0,
          queries: float = 0, hits: float = 0) -> str:
    text = fixture("vllm_v1_kserve_workshop_llama_vllm_single.txt")
    for name, value in (("vllm:prompt_tokens_total", prompt), ("vllm:generation_tokens_total", generation),
                        ("vllm:prompt_tokens_created", created), ("vllm:generation_tokens_created", created),
                        ("vllm:kv_cache_usage_perc", kv), ("vllm:prefix_cache_queries_total", queries),
                        ("vllm:prefix_cache_hits_total", hits), ("vllm:num_requests_waiting", 3.0),
                        ("vllm:num_requests_running", 7.0)):
        text = set_value(text, name, value)
    return text


def test_vllm_v1_counters_become_rates_over_the_real_interval(server) -> None:
    server.payloads["/m"] = [_vllm(1_000, 500, queries=0, hits=0), _vllm(4_000, 2_000, kv=0.5, queries=1000, hits=250)]
    exporter, emitted, clock = _exporter([server.url("/m")])
    assert exporter.scrape_once() is None  # no baseline yet
    clock.now += 15.0
    sample = exporter.scrape_once()
    assert sample is not None and emitted == [sample]
    assert (sample.engine, sample.deployment, sample.model) == ("vllm", "llama-70b", "llama-vllm-single")
    assert (sample.prompt_tokens_delta, sample.generation_tokens_delta) == (3_000, 1_500)
    assert (sample.prompt_tokens_per_s, sample.generation_tokens_per_s, sample.interval_s) == (200.0, 100.0, 15.0)
    assert (sample.kv_cache_utilization, sample.running_requests, sample.waiting_requests) == (0.5, 7.0, 3.0)
    assert sample.prefix_cache_hit_rate == 0.25
    assert (sample.gpu_type, sample.gpu_count) == ("H100", 2)
    assert sample.gpu_utilization is None  # no dcgm, no NVML: absent, not 0


def test_restart_counts_tokens_since_the_restart_never_negative(server) -> None:
    server.payloads["/m"] = [_vllm(50_000, 9_000), _vllm(51_000, 9_500),
                             _vllm(300, 120, created=1776999999.0),   # restarted: counters fell, created changed
                             _vllm(900, 420, created=1776999999.0)]
    exporter, _, clock = _exporter([server.url("/m")])
    samples = []
    for _ in range(4):
        samples.append(exporter.scrape_once())
        clock.now += 10.0
    assert [(s.prompt_tokens_delta, s.generation_tokens_delta) for s in samples[1:]] == [
        (1_000, 500), (300, 120), (600, 300)]
    assert all(s.prompt_tokens_per_s >= 0 for s in samples[1:])


def test_restart_seen_only_through_created_still_is_a_restart(server) -> None:
    # the new process already served more than the old one had: the value grew, but it is a new series
    server.payloads["/m"] = [_vllm(1_000, 100), _vllm(5_000, 700, created=1777000000.0)]
    exporter, _, clock = _exporter([server.url("/m")])
    exporter.scrape_once()
    clock.now += 10.0
    assert exporter.scrape_once().prompt_tokens_delta == 5_000


def test_both_vllm_name_sets_are_read_once_not_added(server) -> None:
    both = _vllm(0, 0, kv=0.3) + ('# TYPE vllm:gpu_cache_usage_perc gauge\n'
                                  'vllm:gpu_cache_usage_perc{engine="0",model_name="llama-vllm-single"} 0.3\n')
    assert read(both).kv_cache_utilization == 0.3
    v0_only = set_value(both, "vllm:kv_cache_usage_perc", 0).replace("vllm:kv_cache_usage_perc", "vllm:other_gauge")
    assert read(v0_only).kv_cache_utilization == 0.3


def _two_engines(prompt: tuple[float, float], kv: tuple[float, float]) -> str:
    one = _vllm(prompt[0], 0, kv=kv[0])
    two = _vllm(prompt[1], 0, kv=kv[1]).replace('engine="0"', 'engine="1"')
    return one + "\n".join(line for line in two.splitlines() if not line.startswith("#")) + "\n"


def test_engines_of_one_deployment_are_summed_and_averaged(server) -> None:
    server.payloads["/m"] = [_two_engines((100, 200), (0.2, 0.4)), _two_engines((1_100, 2_200), (0.2, 0.6))]
    exporter, _, clock = _exporter([server.url("/m")])
    exporter.scrape_once()
    clock.now += 20.0
    sample = exporter.scrape_once()
    assert sample.prompt_tokens_delta == 3_000 and sample.prompt_tokens_per_s == 150.0
    assert sample.kv_cache_utilization == pytest.approx(0.4)
    assert sample.waiting_requests == 6.0  # 3 waiting on each engine


def test_sglang_payload(server) -> None:
    base = fixture("sglang_v0_4_docs_production_metrics.txt")
    later = set_value(base, "sglang:prompt_tokens_total", 8.128902e6 + 6_000)
    later = set_value(later, "sglang:generation_tokens_total", 7.557572e6 + 3_000)
    server.payloads["/m"] = [base, later]
    exporter, _, clock = _exporter([server.url("/m")])
    exporter.scrape_once()
    clock.now += 30.0
    sample = exporter.scrape_once()
    assert sample.engine == "sglang"
    assert (sample.prompt_tokens_delta, sample.generation_tokens_delta) == (6_000, 3_000)
    assert (sample.kv_cache_utilization, sample.running_requests, sample.waiting_requests) == (0.28, 162.0, 2826.0)
    assert sample.prefix_cache_hit_rate == pytest.approx(0.007507552643049313)


TGI = """\
# TYPE tgi_request_input_length histogram
tgi_request_input_length_bucket{{le="+Inf"}} {count}
tgi_request_input_length_sum {prompt}
tgi_request_input_length_count {count}
# TYPE tgi_request_generated_tokens histogram
tgi_request_generated_tokens_bucket{{le="+Inf"}} {count}
tgi_request_generated_tokens_sum {generated}
tgi_request_generated_tokens_count {count}
# TYPE tgi_request_count counter
tgi_request_count {count}
# TYPE tgi_queue_size gauge
tgi_queue_size 4
# TYPE tgi_batch_current_size gauge
tgi_batch_current_size 12
"""


def test_tgi_counters_without_total_and_kv_absent(server) -> None:
    server.payloads["/m"] = [TGI.format(count=10, prompt=5_000, generated=1_000),
                             TGI.format(count=14, prompt=7_000, generated=1_800)]
    exporter, _, clock = _exporter([server.url("/m")])
    exporter.scrape_once()
    clock.now += 10.0
    sample = exporter.scrape_once()
    assert (sample.engine, sample.prompt_tokens_delta, sample.generation_tokens_delta) == ("tgi", 2_000, 800)
    assert (sample.running_requests, sample.waiting_requests) == (12.0, 4.0)
    assert sample.kv_cache_utilization is None


def test_triton_has_kv_and_queues_but_no_token_counters(server) -> None:
    server.payloads["/m"] = [fixture("triton_trtllm_backend_readme_inflight_batcher.txt")]
    exporter, _, clock = _exporter([server.url("/m")])
    exporter.scrape_once()
    clock.now += 10.0
    sample = exporter.scrape_once()
    assert sample.engine == "triton"
    assert (sample.prompt_tokens_delta, sample.prompt_tokens_per_s) == (None, None)  # absent, never 0
    assert (sample.kv_cache_utilization, sample.running_requests, sample.waiting_requests) == (0.4875, 0.0, 1.0)


def test_dcgm_exporter_as_the_gpu_source(server) -> None:
    dcgm = set_value(fixture("dcgm_exporter_v100_issue250_excerpt.txt"), "DCGM_FI_DEV_GPU_UTIL", 50, gpu="0")
    server.payloads["/m"] = [_vllm(0, 0), _vllm(10, 10)]
    server.payloads["/dcgm"] = [dcgm]
    exporter, _, clock = _exporter([server.url("/m")], dcgm_url=server.url("/dcgm"))
    exporter.scrape_once()
    clock.now += 10.0
    sample = exporter.scrape_once()
    values = read(dcgm, "dcgm")
    assert sample.gpu_utilization == values.gpu_utilization
    assert sample.gpu_utilization is not None and 0 < sample.gpu_utilization <= 1


def test_engine_detection() -> None:
    assert detect_engine(fixture("vllm_v0_7_to_v0_9_docs_usage_metrics_snippet.txt")) == "vllm"
    assert detect_engine(fixture("dcgm_exporter_readme_snippet.txt")) == "dcgm"
    with pytest.raises(UnknownEngine, match="no vllm:"):
        detect_engine("# TYPE http_requests_total counter\nhttp_requests_total 3\n")


def test_a_failed_scrape_is_skipped_and_the_next_delta_spans_both_intervals(server) -> None:
    server.payloads["/m"] = [_vllm(1_000, 0), _vllm(2_000, 0)]
    exporter, emitted, clock = _exporter([server.url("/m")])
    exporter.scrape_once()
    clock.now += 10.0
    exporter.config.urls = [server.url("/missing")]
    assert exporter.scrape_once() is None
    exporter.config.urls = [server.url("/m")]
    clock.now += 10.0
    sample = exporter.scrape_once()
    assert (sample.prompt_tokens_delta, sample.interval_s) == (1_000, 20.0)
    assert len(emitted) == 1


def test_without_an_nvidia_driver_nvml_is_reported_once_and_engine_metrics_still_flow(server, caplog) -> None:
    server.payloads["/m"] = [_vllm(0, 0), _vllm(100, 50)]
    with caplog.at_level(logging.WARNING):
        exporter, emitted, clock = _exporter([server.url("/m")], use_nvml=True)
        exporter.scrape_once()
        clock.now += 10.0
        exporter.scrape_once()
    nvml_lines = [r.getMessage() for r in caplog.records if "NVML unavailable" in r.getMessage()]
    assert len(nvml_lines) == 1
    assert emitted[0].prompt_tokens_delta == 100 and emitted[0].gpu_utilization is None
