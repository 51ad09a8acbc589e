"""Bounded, jittered exponential backoff."""

from __future__ import annotations

import random


def backoff_s(attempt: int, *, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (0-based): "full jitter" over an exponential cap."""
    ceiling = min(cap_s, base_s * (2**attempt))
    return (rng or random).uniform(0, ceiling)
