"""One scrape of a serving engine's ``/metrics``, read into engine-neutral numbers.

Parsing is prometheus-client's (``text_string_to_metric_families``); this module
only knows which metric means what in each engine:

| engine | tokens (counters) | KV cache | running / waiting |
|---|---|---|---|
| vLLM V1 (>= 0.9.2) | ``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``; cached part: ``vllm:prompt_tokens_by_source_total`` (not ``source="local_compute"``) or ``vllm:prompt_tokens_cached_total`` | ``vllm:kv_cache_usage_perc`` | ``vllm:num_requests_running`` / ``_waiting`` |
| vLLM (prefill / decode time) | ``vllm:request_prefill_time_seconds_sum``, ``vllm:request_decode_time_seconds_sum`` | | |
| vLLM V0 | same counters | ``vllm:gpu_cache_usage_perc`` (ignored when the V1 name is present: 0.9.2–0.10.x publish both) | same |
| SGLang | ``sglang:prompt_tokens_total``, ``sglang:generation_tokens_total``; cached part: ``sglang:cached_tokens_total`` | ``sglang:token_usage`` | ``sglang:num_running_reqs`` / ``num_queue_reqs`` |
| SGLang (GPU busy time) | ``sglang:gpu_execution_seconds_total`` | | |
| TGI | ``tgi_request_input_length_sum``, ``tgi_request_generated_tokens_sum`` (histogram sums; TGI's counters have no ``_total``) | — | ``tgi_batch_current_size`` / ``tgi_queue_size`` |
| Triton TRT-LLM | — (no token counters) | ``nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}``, else ``used`` / ``max`` blocks | ``nv_trt_llm_request_metrics{request_type="active"/"waiting"}`` |
| dcgm-exporter | — | — | — ; GPU utilisation (``DCGM_FI_PROF_GR_ENGINE_ACTIVE``, else ``DCGM_FI_DEV_GPU_UTIL``), framebuffer used, power (see :mod:`~spendstream.gpu_exporter.dcgm`) |

Counters are kept per series (their full label set: ``engine``, ``pid``,
``dp_rank``…) with their ``*_created`` time, so restarts can be told apart from
traffic (:mod:`spendstream.gpu_exporter.rates`). Gauges of several engines or
processes are combined per deployment (utilisations averaged, with the KV cache's
maximum kept beside its mean; request counts summed). A value the payload does not have stays ``None``: never 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from spendstream.gpu_exporter.dcgm import DcgmFilter, gpu_of, once_per_gpu

ENGINES = ("vllm", "sglang", "tgi", "triton", "dcgm")
# Labels that split a series the engine also publishes whole: SGLang with priority
# scheduling exports ``num_running_reqs{priority="…"}`` beside the unlabelled total.
BREAKDOWN_LABELS = ("priority",)
SeriesKey = tuple[str, frozenset[tuple[str, str]]]  # (source, labels)


class UnknownEngine(ValueError):
    """The payload has no metric of a serving engine spendstream reads."""


@dataclass(frozen=True, slots=True)
class CounterValue:
    value: float
    created: float | None  # the series' *_created time (seconds since the epoch), when published


@dataclass(slots=True)
class Reading:
    engine: str
    counters: dict[str, dict[SeriesKey, CounterValue]] = field(default_factory=lambda: defaultdict(dict))
    kv_cache_utilization: float | None = None  # mean over the engines
    kv_cache_utilization_max: float | None = None  # the fullest engine
    running_requests: float | None = None
    waiting_requests: float | None = None
    prefix_cache_hit_rate: float | None = None  # a gauge some engines publish directly
    gpu_utilization: float | None = None
    gpu_memory_used_bytes: float | None = None
    gpu_power_w: float | None = None
    gpu_count: int | None = None
    model: str | None = None
    sources: tuple[str, ...] = ()  # the scrape targets read into this reading


class _Samples:
    """A payload's samples by name: name → [(labels, value)]."""

    def __init__(self, text: str) -> None:
        self.by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.by_name[sample.name].append((dict(sample.labels), float(sample.value)))
        for name, series in self.by_name.items():
            self.by_name[name] = _without_breakdowns(series)

    def keep(self, wanted: Callable[[dict[str, str]], bool]) -> None:
        """Only the series whose labels ``wanted`` accepts."""
        for name, series in self.by_name.items():
            self.by_name[name] = [(labels, v) for labels, v in series if wanted(labels)]

    def names(self) -> Iterable[str]:
        return self.by_name.keys()

    def values(self, name: str, **where: str) -> list[float]:
        return [v for labels, v in self.by_name.get(name, ()) if all(labels.get(k) == w for k, w in where.items())]

    def has(self, name: str) -> bool:
        return name in self.by_name

    def total(self, name: str, **where: str) -> float | None:
        values = self.values(name, **where)
        return sum(values) if values else None

    def mean(self, name: str, **where: str) -> float | None:
        values = self.values(name, **where)
        return sum(values) / len(values) if values else None

    def max(self, name: str, **where: str) -> float | None:
        values = self.values(name, **where)
        return max(values) if values else None

    def counters(self, name: str, created_name: str | None, source: str,
                 where: Callable[[dict[str, str]], bool] = lambda labels: True) -> dict[SeriesKey, CounterValue]:
        created = {frozenset(labels.items()): v for labels, v in self.by_name.get(created_name or "", ())}
        return {(source, frozenset(labels.items())): CounterValue(v, created.get(frozenset(labels.items())))
                for labels, v in self.by_name.get(name, ()) if where(labels)}

    def label(self, prefix: str, *labels: str) -> str | None:
        """The first value of one of ``labels`` on any series whose name starts with ``prefix``.

        Engines put the served model's name on most of their series, but which ones
        vary by version and layout (a gauge may be absent until the first request).
        """
        for name, series in self.by_name.items():
            if name.startswith(prefix):
                for found, _ in series:
                    for label in labels:
                        if found.get(label):
                            return found[label]
        return None


def _without_breakdowns(series: list[tuple[dict[str, str], float]]) -> list[tuple[dict[str, str], float]]:
    """The series minus those that only break down another series of the same family.

    A series with a breakdown label (``priority``) is dropped when the family also has
    the series without it (same other labels): that one is the total, and adding both
    counts every request twice. A breakdown with no total beside it is kept.
    """
    if not any(label in labels for labels, _ in series for label in BREAKDOWN_LABELS):
        return series
    totals = {frozenset(labels.items()) for labels, _ in series if not any(k in labels for k in BREAKDOWN_LABELS)}

    def whole(labels: dict[str, str]) -> frozenset[tuple[str, str]]:
        return frozenset((k, v) for k, v in labels.items() if k not in BREAKDOWN_LABELS)

    return [(labels, value) for labels, value in series
            if not any(k in labels for k in BREAKDOWN_LABELS) or whole(labels) not in totals]


def detect_engine(text: str) -> str:
    """The engine whose metric names the payload carries."""
    return _detect(_Samples(text))


def _detect(samples: _Samples) -> str:
    names = list(samples.names())
    for prefix, engine in (("vllm:", "vllm"), ("sglang:", "sglang"), ("tgi_", "tgi"), ("nv_trt_llm_", "triton"),
                           ("DCGM_FI_", "dcgm")):
        if any(name.startswith(prefix) for name in names):
            return engine
    raise UnknownEngine("no vllm:, sglang:, tgi_, nv_trt_llm_ or DCGM_FI_ metrics in the payload")


def read(text: str, engine: str | None = None, source: str = "", dcgm_filter: DcgmFilter | None = None) -> Reading:
    """Read one payload. ``engine`` None means detect it; ``source`` tells scraped URLs apart;
    ``dcgm_filter`` keeps the dcgm-exporter series of one deployment (default: the whole node)."""
    samples = _Samples(text)
    if dcgm_filter is not None and not dcgm_filter.node_wide:
        samples.keep(dcgm_filter.keeps)
    engine = engine or _detect(samples)
    reader = {"vllm": _vllm, "sglang": _sglang, "tgi": _tgi, "triton": _triton, "dcgm": _dcgm}.get(engine)
    if reader is None:
        raise UnknownEngine(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    reading = Reading(engine, sources=(source,))
    reader(samples, reading, source)
    return reading


def _vllm(s: _Samples, r: Reading, source: str) -> None:
    r.counters["prompt_tokens"] = s.counters("vllm:prompt_tokens_total", "vllm:prompt_tokens_created", source)
    r.counters["generation_tokens"] = s.counters("vllm:generation_tokens_total", "vllm:generation_tokens_created",
                                                 source)
    r.counters["prefix_queries"] = s.counters("vllm:prefix_cache_queries_total", "vllm:prefix_cache_queries_created",
                                              source)
    r.counters["prefix_hits"] = s.counters("vllm:prefix_cache_hits_total", "vllm:prefix_cache_hits_created", source)
    # Time requests spent in prefill and in decode (histogram sums, observed when a request
    # finishes): their ratio splits GPU cost between input and output tokens.
    r.counters["prefill_seconds"] = s.counters("vllm:request_prefill_time_seconds_sum",
                                               "vllm:request_prefill_time_seconds_created", source)
    r.counters["decode_seconds"] = s.counters("vllm:request_decode_time_seconds_sum",
                                              "vllm:request_decode_time_seconds_created", source)
    # Prompt tokens include prefix-cache hits. vLLM >= 0.11 splits them by source
    # (local_compute / local_cache_hit / external_kv_transfer); only local_compute was
    # computed here. Without the split, the cached part is unknown (None), not 0.
    r.counters["prompt_tokens_cached"] = s.counters(
        "vllm:prompt_tokens_by_source_total", "vllm:prompt_tokens_by_source_created", source,
        where=lambda labels: labels.get("source") != "local_compute")
    if not r.counters["prompt_tokens_cached"]:
        r.counters["prompt_tokens_cached"] = s.counters("vllm:prompt_tokens_cached_total",
                                                        "vllm:prompt_tokens_cached_created", source)
    # 0.9.2–0.10.x publish both names for the same quantity: read one, never add them.
    kv_name = "vllm:kv_cache_usage_perc" if s.has("vllm:kv_cache_usage_perc") else "vllm:gpu_cache_usage_perc"
    r.kv_cache_utilization, r.kv_cache_utilization_max = s.mean(kv_name), s.max(kv_name)
    r.running_requests = s.total("vllm:num_requests_running")
    r.waiting_requests = s.total("vllm:num_requests_waiting")
    if not r.counters["prefix_queries"]:
        r.prefix_cache_hit_rate = s.mean("vllm:gpu_prefix_cache_hit_rate")
    r.model = s.label("vllm:", "model_name")


def _sglang(s: _Samples, r: Reading, source: str) -> None:
    r.counters["prompt_tokens"] = s.counters("sglang:prompt_tokens_total", "sglang:prompt_tokens_created", source)
    r.counters["generation_tokens"] = s.counters("sglang:generation_tokens_total",
                                                 "sglang:generation_tokens_created", source)
    r.counters["prompt_tokens_cached"] = s.counters("sglang:cached_tokens_total", None, source)
    # the time the GPU was busy executing forward passes, every category: the usage basis
    r.counters["gpu_busy_seconds"] = s.counters("sglang:gpu_execution_seconds_total", None, source)
    r.kv_cache_utilization, r.kv_cache_utilization_max = s.mean("sglang:token_usage"), s.max("sglang:token_usage")
    r.running_requests = s.total("sglang:num_running_reqs")
    r.waiting_requests = s.total("sglang:num_queue_reqs")
    r.prefix_cache_hit_rate = s.mean("sglang:cache_hit_rate")
    r.model = s.label("sglang:", "model_name")


def _tgi(s: _Samples, r: Reading, source: str) -> None:
    r.counters["prompt_tokens"] = s.counters("tgi_request_input_length_sum", None, source)
    r.counters["generation_tokens"] = s.counters("tgi_request_generated_tokens_sum", None, source)
    r.running_requests = s.total("tgi_batch_current_size")
    r.waiting_requests = s.total("tgi_queue_size")


def _triton(s: _Samples, r: Reading, source: str) -> None:
    fractions = s.values("nv_trt_llm_kv_cache_block_metrics", kv_cache_block_type="fraction") or _block_fractions(s)
    r.kv_cache_utilization = sum(fractions) / len(fractions) if fractions else None
    r.kv_cache_utilization_max = max(fractions) if fractions else None
    r.running_requests = s.total("nv_trt_llm_request_metrics", request_type="active")
    r.waiting_requests = s.total("nv_trt_llm_request_metrics", request_type="waiting")
    r.model = s.label("nv_trt_llm_", "model")


def _block_fractions(s: _Samples) -> list[float]:
    """Used / max KV blocks per model instance, for Triton builds that publish no ``fraction``."""
    used: dict[frozenset[tuple[str, str]], float] = {}
    most: dict[frozenset[tuple[str, str]], float] = {}
    for labels, value in s.by_name.get("nv_trt_llm_kv_cache_block_metrics", ()):
        key = frozenset((k, v) for k, v in labels.items() if k != "kv_cache_block_type")
        kind = labels.get("kv_cache_block_type")
        if kind == "used":
            used[key] = value
        elif kind == "max":
            most[key] = value
    return [used[key] / most[key] for key in used if most.get(key)]


def _dcgm(s: _Samples, r: Reading, source: str) -> None:
    # MIG instances publish no DCGM_FI_DEV_GPU_UTIL; the profiling metric (a ratio, per
    # instance) is there on MIG and whole GPUs alike, so it is preferred when present.
    active = s.values("DCGM_FI_PROF_GR_ENGINE_ACTIVE")
    util = [v / 100 for v in s.values("DCGM_FI_DEV_GPU_UTIL")]
    chosen = active or util
    r.gpu_utilization = sum(chosen) / len(chosen) if chosen else None
    used_mib = s.total("DCGM_FI_DEV_FB_USED")  # per MIG instance under MIG: each its own
    r.gpu_memory_used_bytes = used_mib * 2**20 if used_mib is not None else None
    power = once_per_gpu(s.by_name.get("DCGM_FI_DEV_POWER_USAGE", ()))  # device-wide, repeated per instance
    r.gpu_power_w = sum(power) if power else None
    gpus = {gpu_of(labels) for name in ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_POWER_USAGE")
            for labels, _ in s.by_name.get(name, ())}
    gpus.discard(None)
    r.gpu_count = len(gpus) or None
