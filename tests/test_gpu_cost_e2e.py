"""End to end: exporter samples and usage events for one deployment → $/1M tokens and a per-team split.

A real payload server, the exporter, the real emitter, a tansu broker and a worker
process writing to chdb; the numbers are checked against a hand computation.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from spendstream.demo.worker_process import WorkerProcess
from spendstream.emitter import Emitter
from spendstream.gpu_exporter.exporter import ExporterConfig, GpuExporter
from spendstream.kafka_admin import ensure_topics
from spendstream.schemas import UsageEvent
from spendstream.sinks.store import query_result
from tests.conftest import wait_for_count, worker_settings
from tests.test_gpu_exporter import Clock, PayloadServer, _vllm

pytestmark = pytest.mark.integration

NOON = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
DEPLOYMENTS = """\
deployments:
  - name: llama-70b
    gpu_type: H100-80GB
    gpu_count: 2
    usd_per_gpu_hour: 2.50
    pricing: reserved
    idle_below_tokens_per_s: 5
"""


def test_gpu_minutes_become_unit_costs_and_an_exact_allocation(broker, topic, tmp_path) -> None:
    deployments = tmp_path / "deployments.yaml"
    deployments.write_text(DEPLOYMENTS)
    settings = worker_settings(tmp_path / "data", topic, deployments_file=deployments)
    ensure_topics(broker, {topic: settings.topic_partitions, settings.gpu_topic: 1})

    # Four scrapes 15 s apart from 12:00:00: three samples, each +3,000 prompt and +1,000 generated tokens.
    server = PayloadServer()
    server.payloads["/metrics"] = [_vllm(3_000 * i, 1_000 * i) for i in range(4)]
    clock = Clock(NOON.timestamp())
    with Emitter(bootstrap_servers=broker, topic=settings.gpu_topic, max_batch_events=1,
                 register_atexit=False) as gpu_emitter:
        exporter = GpuExporter(ExporterConfig(deployment="llama-70b", urls=[server.url("/metrics")],
                                              use_nvml=False), gpu_emitter.emit, clock=clock)
        for _ in range(4):
            exporter.scrape_once()
            clock.now += 15
        assert gpu_emitter.flush(30)
    server.close()

    # Three teams call the deployment in that minute with 1,000 tokens each: a third each.
    events = [UsageEvent(event_id=f"{topic}-{team}", ts=NOON.replace(second=20), provider="self-hosted",
                         model="llama-3-70b", deployment="llama-70b", team=team, input_tokens=700, output_tokens=300)
              for team in ("chat", "rag", "search")]
    with Emitter(bootstrap_servers=broker, topic=topic, register_atexit=False) as emitter:
        for event in events:
            emitter.emit(event)
        assert emitter.flush(30)

    with WorkerProcess(settings, bootstrap_servers=broker, log_path=tmp_path / "worker.log") as worker:
        querier = worker.query_client()
        assert wait_for_count(querier, "SELECT count() FROM gpu_samples FINAL", 3) == 3
        assert wait_for_count(querier, "SELECT count() FROM usage_events FINAL", 3) == 3

        row = query_result(querier, "SELECT observed_s, prompt_tokens, generation_tokens, gpu_cost_usd, "
                                    "usd_per_1m_tokens, idle FROM gpu_minutely JOIN gpu_unit_costs_minutely "
                                    "USING (minute, deployment)").dicts()
        # 2 GPUs × $2.50/h for 45 observed seconds = $0.0625; 12,000 tokens → $5.208333… per million
        assert len(row) == 1
        assert (row[0]["observed_s"], row[0]["prompt_tokens"], row[0]["generation_tokens"]) == (45.0, 9_000, 3_000)
        assert row[0]["gpu_cost_usd"] == Decimal("0.0625")
        assert row[0]["usd_per_1m_tokens"] == Decimal("5.208333333333333333")  # truncated at 18 decimals
        assert row[0]["idle"] == 0

        parts = query_result(querier, "SELECT team, allocated_cost_usd FROM gpu_cost_allocated_minutely "
                                      "ORDER BY team").rows
        third = Decimal("0.0625") / 3
        assert [p[0] for p in parts] == ["chat", "rag", "search"]
        assert all(abs(p[1] - third) < Decimal("1e-17") for p in parts)
        assert sum(p[1] for p in parts) == Decimal("0.0625")  # nothing created or lost by the split

        daily = query_result(querier, "SELECT gpu_cost_usd, idle_cost_usd, tokens FROM gpu_cost_daily").rows
        assert daily == [[Decimal("0.0625"), Decimal(0), 12_000]]


def test_gpu_exporter_command_emits_a_sample(broker, topic, tmp_path) -> None:
    import os
    import subprocess
    import sys

    import orjson

    from spendstream.schemas.gpu import GpuSample
    from tests.conftest import consume_all

    server = PayloadServer()
    server.payloads["/metrics"] = [_vllm(0, 0), _vllm(500, 100)]
    gpu_topic = f"{topic}.gpu"
    ensure_topics(broker, {gpu_topic: 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSTREAM_")}
    env |= {"SPENDSTREAM_KAFKA_BOOTSTRAP": broker, "SPENDSTREAM_GPU_TOPIC": gpu_topic}
    try:
        result = subprocess.run([sys.executable, "-m", "spendstream", "gpu-exporter", "--deployment", "d1",
                                 "--url", server.url("/metrics"), "--interval", "0.5", "--once", "--gpu-count", "2"],
                                env=env, capture_output=True, text=True, timeout=60)
    finally:
        server.close()
    assert result.returncode == 0, result.stderr
    assert "NVML unavailable" in result.stderr  # no NVIDIA driver here: said once, clearly
    records = consume_all(broker, gpu_topic, expect=1)
    sample = GpuSample.model_validate(orjson.loads(records[0])[0])
    assert (sample.deployment, sample.engine, sample.prompt_tokens_delta, sample.gpu_count) == ("d1", "vllm", 500, 2)
