"""The real traces behind the evaluation traffic: per-minute arrivals (the burst shape) and request sizes.

Three shapes: the Azure 2023 conversation trace (bundled with the package: steady), the
Azure 2023 code trace (very bursty: empty minutes, 67 requests in one second) and the
Mooncake FAST'25 synthetic trace (17 minutes, long prompts). Sources and licences:
``bench/data/README.md`` and ``spendstream/data/README.md``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent.parent / "data"
SHAPES = ("conv", "code", "mooncake")


@dataclass(frozen=True)
class Trace:
    name: str
    per_minute: np.ndarray     # arrivals per minute of the trace, normalised to mean 1 (the burst shape)
    input_tokens: np.ndarray   # per request, to resample sizes from
    output_tokens: np.ndarray


def _azure(text: str) -> tuple[list[float], list[int], list[int]]:
    offsets, inputs, outputs, first = [], [], [], None
    for line in csv.DictReader(text.splitlines()):
        stamp, _, fraction = line["TIMESTAMP"].partition(".")
        ts = datetime.fromisoformat(f"{stamp}.{fraction[:6]:0<6}")
        first = first or ts
        offsets.append((ts - first).total_seconds())
        inputs.append(int(line["ContextTokens"]))
        outputs.append(int(line["GeneratedTokens"]))
    return offsets, inputs, outputs


def load(shape: str) -> Trace:
    if shape == "conv":
        offsets, inputs, outputs = _azure(
            resources.files("spendstream.data").joinpath("azure_llm_2023_conv.csv").read_text(encoding="utf-8"))
    elif shape == "code":
        offsets, inputs, outputs = _azure((DATA / "azure_llm_2023_code.csv").read_text(encoding="utf-8"))
    elif shape == "mooncake":
        with (DATA / "mooncake_fast25_synthetic.csv").open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        offsets = [int(r["timestamp_ms"]) / 1000 for r in rows]
        inputs = [int(r["input_length"]) for r in rows]
        outputs = [int(r["output_length"]) for r in rows]
    else:
        raise ValueError(f"unknown trace shape {shape!r}: one of {SHAPES}")
    minutes = int(max(offsets) // 60)  # whole minutes only: the last one is cut short
    counts = np.bincount(np.array(offsets, dtype=int) // 60, minlength=minutes)[:minutes].astype(float)
    return Trace(shape, counts / counts.mean(), np.array(inputs, dtype=float), np.array(outputs, dtype=float))
