"""The exporter loop: scrape the engine (and dcgm-exporter, and NVML where present), emit GpuSamples.

    spendstream gpu-exporter --deployment llama-70b --url http://127.0.0.1:8000/metrics \\
        [--dcgm-url http://127.0.0.1:9400/metrics] [--engine auto] [--interval 15]

Every interval it scrapes each URL, turns counters into deltas over the real
time since the previous scrape, and emits one GpuSample for the deployment
through the same non-blocking emitter services use (to ``SPENDSTREAM_GPU_TOPIC``,
one sample per record keyed by nothing: the pipeline keys by deployment). A
scrape that fails is logged and skipped — the next delta then spans both
intervals, so no tokens are lost or doubled.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from spendstream.gpu_exporter.dcgm import DcgmFilter
from spendstream.gpu_exporter.rates import CounterTracker
from spendstream.gpu_exporter.readings import Reading, read
from spendstream.gpu_exporter.sample import InvalidSample, build_sample
from spendstream.schemas.gpu import GpuSample

log = logging.getLogger(__name__)


@dataclass
class ExporterConfig:
    deployment: str
    urls: Sequence[str]
    engine: str | None = None  # None: detect from the metric names
    dcgm_url: str | None = None
    dcgm_filter: DcgmFilter = field(default_factory=DcgmFilter)  # node-wide unless told the pods or GPUs
    interval_s: float = 15.0
    timeout_s: float = 5.0
    gpu_type: str | None = None
    model: str | None = None  # the served model, when the engine's metrics do not name it (TGI)
    gpu_count: int | None = None
    use_nvml: bool = True


@dataclass
class GpuExporter:
    config: ExporterConfig
    emit: Callable[[GpuSample], object]
    clock: Callable[[], float] = time.time
    _tracker: CounterTracker = field(default_factory=CounterTracker)
    # Losses by reason: a reading's field name when it was out of range, "scrape_failed",
    # "invalid_sample", "error" (anything else one interval raised; the loop goes on).
    dropped: Counter[str] = field(default_factory=Counter)
    _nvml: Nvml | None = None

    def __post_init__(self) -> None:
        if self.config.use_nvml:
            self._nvml = Nvml.open()
        if self.config.dcgm_url and self.config.dcgm_filter.node_wide:
            log.warning("dcgm-exporter numbers for %s are node-wide: every pod's GPU memory and power count; "
                        "give the deployment's pods (--dcgm-pod) or GPU UUIDs (--gpu-uuid)", self.config.deployment)

    def scrape_once(self) -> GpuSample | None:
        """Scrape every source once; emit and return a sample (None on the first scrape or a failure)."""
        at = self.clock()
        try:
            readings = [read(_fetch(url, self.config.timeout_s), self.config.engine, source=url)
                        for url in self.config.urls]
        except (OSError, ValueError) as exc:
            self.dropped["scrape_failed"] += 1
            log.warning("scrape of %s failed, skipping this interval: %s", self.config.deployment, exc)
            return None
        engine = _merge(readings)
        gpu = self._gpu_reading()
        deltas = self._tracker.update(engine, at)
        if deltas is None:
            return None
        prompt, generation = deltas.counts.get("prompt_tokens"), deltas.counts.get("generation_tokens")
        cached = deltas.counts.get("prompt_tokens_cached")
        queries, hits = deltas.counts.get("prefix_queries"), deltas.counts.get("prefix_hits")
        hit_rate = hits / queries if queries and hits is not None else engine.prefix_cache_hit_rate
        fields = dict(
            ts=datetime.fromtimestamp(at, timezone.utc), interval_s=deltas.interval_s,
            deployment=self.config.deployment, engine=engine.engine, model=engine.model or self.config.model,
            gpu_type=self.config.gpu_type, gpu_count=self.config.gpu_count or (gpu.gpu_count if gpu else None),
            prompt_tokens_delta=round(prompt) if prompt is not None else None,
            prompt_tokens_cached_delta=round(cached) if cached is not None else None,
            generation_tokens_delta=round(generation) if generation is not None else None,
            prompt_tokens_per_s=deltas.rate("prompt_tokens"), generation_tokens_per_s=deltas.rate("generation_tokens"),
            prefill_seconds_delta=deltas.counts.get("prefill_seconds"),
            decode_seconds_delta=deltas.counts.get("decode_seconds"),
            gpu_busy_seconds_delta=deltas.counts.get("gpu_busy_seconds"),
            kv_cache_utilization=engine.kv_cache_utilization,
            kv_cache_utilization_max=engine.kv_cache_utilization_max, running_requests=engine.running_requests,
            waiting_requests=engine.waiting_requests, prefix_cache_hit_rate=hit_rate,
            gpu_utilization=gpu.gpu_utilization if gpu else None,
            gpu_memory_used_bytes=gpu.gpu_memory_used_bytes if gpu else None,
            gpu_power_w=gpu.gpu_power_w if gpu else None,
        )
        try:
            sample = build_sample(fields, self.dropped)
        except InvalidSample as exc:
            self.dropped["invalid_sample"] += 1
            log.error("%s; interval skipped", exc)
            return None
        self.emit(sample)
        return sample

    def run(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Scrape every ``interval_s`` until ``stop()`` is true. No interval's failure ends the loop."""
        next_at = time.monotonic()
        while not stop():
            try:
                self.scrape_once()
            except Exception:  # a bug or a payload nobody foresaw costs this interval, not the exporter
                self.dropped["error"] += 1
                log.exception("GPU exporter interval for %s failed; exporting goes on", self.config.deployment)
            next_at += self.config.interval_s
            time.sleep(max(next_at - time.monotonic(), 0))

    def _gpu_reading(self) -> Reading | None:
        if self.config.dcgm_url:
            try:
                return read(_fetch(self.config.dcgm_url, self.config.timeout_s), "dcgm",
                            dcgm_filter=self.config.dcgm_filter)
            except (OSError, ValueError) as exc:
                log.warning("dcgm-exporter scrape failed: %s", exc)
        return self._nvml.read() if self._nvml else None


def _fetch(url: str, timeout_s: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - operator-given URL
        return response.read().decode("utf-8", errors="replace")


def _merge(readings: list[Reading]) -> Reading:
    """Several endpoints of one deployment: counters side by side, utilisations averaged (KV's max kept),
    queues summed."""
    if len(readings) == 1:
        return readings[0]
    merged = Reading(readings[0].engine, model=readings[0].model,
                     sources=tuple(source for r in readings for source in r.sources))
    for reading in readings:
        for kind, series in reading.counters.items():
            merged.counters[kind].update(series)
    for name, combine in (("kv_cache_utilization", _mean), ("kv_cache_utilization_max", _max),
                          ("prefix_cache_hit_rate", _mean),
                          ("running_requests", _sum), ("waiting_requests", _sum)):
        setattr(merged, name, combine([getattr(r, name) for r in readings]))
    return merged


def _present(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _mean(values: list[float | None]) -> float | None:
    present = _present(values)
    return sum(present) / len(present) if present else None


def _max(values: list[float | None]) -> float | None:
    present = _present(values)
    return max(present) if present else None


def _sum(values: list[float | None]) -> float | None:
    present = _present(values)
    return sum(present) if present else None


class Nvml:
    """GPU utilisation, memory and power from the NVIDIA driver, where there is one (nvidia-ml-py)."""

    def __init__(self, pynvml, handles) -> None:
        self._pynvml, self._handles = pynvml, handles

    @classmethod
    def open(cls) -> Nvml | None:
        """The driver's GPUs, or None — reported once, clearly — when there is no driver or no nvidia-ml-py."""
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except ImportError:
            log.warning("NVML unavailable: nvidia-ml-py is not installed (pip install 'spendstream[nvml]'); "
                        "reading engine metrics only")
            return None
        except Exception as exc:  # pynvml raises NVMLError subclasses and OSError for a missing library
            log.warning("NVML unavailable (%s: %s): no NVIDIA driver here; reading engine metrics only",
                        type(exc).__name__, exc)
            return None
        return cls(pynvml, handles)

    def read(self) -> Reading:
        nv = self._pynvml
        util = [nv.nvmlDeviceGetUtilizationRates(h).gpu for h in self._handles]
        return Reading("nvml", gpu_utilization=sum(util) / len(util) / 100 if util else None,
                       gpu_memory_used_bytes=float(sum(nv.nvmlDeviceGetMemoryInfo(h).used for h in self._handles)),
                       gpu_power_w=sum(nv.nvmlDeviceGetPowerUsage(h) for h in self._handles) / 1000,
                       gpu_count=len(self._handles))
