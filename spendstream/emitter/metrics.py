"""An emitter's counters as Prometheus metrics, for a host service that is scraped already. Optional.

Off unless the host asks for it, and the only module of the emitter that needs
``prometheus-client`` (``pip install 'spendstream[emitter-metrics]'``, or any
prometheus-client the host already has)::

    from spendstream.emitter.metrics import expose_metrics

    expose_metrics(emitter)                      # into prometheus-client's default registry
    # the host's existing /metrics now has them; a service without one can serve them with
    # prometheus_client.start_http_server(9464)

The families are built afresh from :meth:`Emitter.stats` at each scrape: nothing is
counted twice, and ``emit()`` does no extra work for them.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator

try:
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # the emitter itself never imports this module
    raise ImportError("spendstream.emitter.metrics needs prometheus-client: "
                      "pip install 'spendstream[emitter-metrics]'") from exc

from spendstream.emitter.client import Emitter
from spendstream.emitter.tally import DROP_REASONS

PREFIX = "spendstream_emitter"


class EmitterCollector(Collector):
    """The counters of one emitter, labelled ``emitter=<name>`` (several emitters in one process stay apart).

    Holds the emitter weakly: a collector left registered does not keep a closed emitter alive,
    and reports nothing once it is gone.
    """

    def __init__(self, emitter: Emitter, *, name: str = "default") -> None:
        self._emitter = weakref.ref(emitter)
        self.name = name

    def collect(self) -> Iterator[Metric]:
        emitter = self._emitter()
        if emitter is None:
            return
        stats = emitter.stats()
        label = [self.name]
        for key, help_ in (("enqueued", "Events emit() accepted into the buffer."),
                           ("sent_events", "Events Kafka acknowledged."),
                           ("sent_records", "Kafka records acknowledged (each carries many events).")):
            yield _family(CounterMetricFamily, key, help_, label, stats[key])
        dropped = CounterMetricFamily(f"{PREFIX}_dropped_events", "Events lost, by reason (queue_full, oversize, "
                                      "shutdown, send_failed, unencodable).", labels=["emitter", "reason"])
        for reason in DROP_REASONS:
            dropped.add_metric([self.name, reason], stats[f"dropped_{reason}"])
        yield dropped
        yield _family(GaugeMetricFamily, "buffered_events", "Events held now: queued or not yet acknowledged.",
                      label, stats["buffered_events"])
        yield _family(GaugeMetricFamily, "buffered_bytes", "Encoded bytes of the held events the sender has "
                      "encoded.", label, stats["buffered_bytes"])


def _family(kind: type, key: str, help_: str, label: list[str], value: float) -> Metric:
    family = kind(f"{PREFIX}_{key}", help_, labels=["emitter"])
    family.add_metric(label, value)
    return family


def expose_metrics(emitter: Emitter, *, name: str = "default",
                   registry: CollectorRegistry | None = None) -> EmitterCollector:
    """Register ``emitter``'s counters in ``registry`` (prometheus-client's default one unless given);
    returns the collector, for ``registry.unregister`` when the emitter is retired."""
    collector = EmitterCollector(emitter, name=name)
    (registry if registry is not None else REGISTRY).register(collector)
    return collector
