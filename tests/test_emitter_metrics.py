"""An emitter's counters, exposed through prometheus-client when the host asks, and only then."""

from __future__ import annotations

import subprocess
import sys
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from spendstream.emitter import Emitter
from spendstream.emitter.metrics import expose_metrics
from spendstream.localbroker import free_port
from spendstream.schemas import UsageEvent


def _samples(port: int) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.integration
def test_a_scrape_shows_what_the_emitter_sent_and_dropped(broker, topic) -> None:
    registry = CollectorRegistry()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        emitter = Emitter(bootstrap_servers=broker, topic=topic, ledger_topic=None, register_atexit=False)
        expose_metrics(emitter, name="api", registry=registry)
        label = ("emitter", "api")
        assert _samples(port)[("spendstream_emitter_sent_events_total", frozenset([label]))] == 0
        for i in range(25):
            emitter.emit(UsageEvent(event_id=f"{topic}-{i}", provider="openai", model="gpt-4o-mini",
                                    input_tokens=10, output_tokens=1))
        assert emitter.flush(30)
        emitter.close()
        emitter.emit(UsageEvent(event_id=f"{topic}-late", provider="openai", model="gpt-4o-mini"))  # after close
        samples = _samples(port)
        assert samples[("spendstream_emitter_enqueued_total", frozenset([label]))] == 25
        assert samples[("spendstream_emitter_sent_events_total", frozenset([label]))] == 25
        assert samples[("spendstream_emitter_sent_records_total", frozenset([label]))] >= 1
        assert samples[("spendstream_emitter_buffered_events", frozenset([label]))] == 0
        dropped = {dict(labels)["reason"]: v for (name, labels), v in samples.items()
                   if name == "spendstream_emitter_dropped_events_total"}
        assert dropped == {"queue_full": 0, "oversize": 0, "shutdown": 1, "send_failed": 0, "unencodable": 0}
    finally:
        server.shutdown()
        thread.join(5)


def test_the_emitter_does_not_import_prometheus_client_unless_asked() -> None:
    code = "import sys, spendstream.emitter; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_without_prometheus_client_the_error_says_what_to_install() -> None:
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "try:\n    import spendstream.emitter.metrics\nexcept ImportError as exc:\n    print(exc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'spendstream[emitter-metrics]'" in out
