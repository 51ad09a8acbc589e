"""Bounded, jittered exponential backoff."""

from __future__ import annotations

import random

# 2**64 times any sensible base is past any sensible cap; a larger power overflows a float
# after about a thousand attempts, which a retry loop with no deadline reaches.
_MAX_DOUBLINGS = 64


def backoff_s(attempt: int, *, base_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (0-based): "full jitter" over an exponential cap."""
    ceiling = min(cap_s, base_s * (2 ** min(attempt, _MAX_DOUBLINGS)))
    return (rng or random).uniform(0, ceiling)
