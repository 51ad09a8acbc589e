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
