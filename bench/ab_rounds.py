"""A against B in one process: the rounds ``view_ab.py`` and ``panel_ab.py`` share, and their table's cells.

Every case is asked both ways each round, the cases' order and the two sides' order reversed every other round, and
the answers checked to agree every round (a faster wrong answer measures nothing). What is timed is the process's
CPU: chdb runs in the process, so on a shared machine this is the part another job's load does not inflate.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

Case = TypeVar("Case")


def alternate(cases: Mapping[str, tuple[Case, Case]], ask: Callable[[Case], list], *, rounds: int,
              agree: Callable[[str, list, list], bool] = lambda _name, a, b: a == b,
              announce: bool = False) -> dict[str, tuple[list[float], list[float]]]:
    """name -> (A's CPU seconds, B's) over ``rounds`` rounds after one warm-up round that is not kept.

    ``ask`` runs one side's case and returns its rows; ``agree(name, a_rows, b_rows)`` must hold every round
    (an AssertionError names the case otherwise). ``announce`` prints each round's start and the load average.
    """
    cpu: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
    for round_ in range(rounds + 1):  # round 0 warms up
        if announce:
            print(f"round {round_} {time.strftime('%H:%M:%S')} load {open('/proc/loadavg').read().split()[:3]}",
                  flush=True)
        for name in (list(cases) if round_ % 2 else list(reversed(cases))):
            rows = {}
            for side in ((0, 1) if round_ % 2 else (1, 0)):
                began = time.process_time()
                rows[side] = ask(cases[name][side])
                if round_:
                    cpu[name][side].append(time.process_time() - began)
            assert agree(name, rows[0], rows[1]), f"{name}: A and B differ"
    return cpu


def ms(runs: list[float]) -> str:
    """``median / p95`` of seconds, in whole milliseconds (the p95 is a run that happened, not an interpolation)."""
    p95 = sorted(runs)[math.ceil(0.95 * len(runs)) - 1]
    return f"{statistics.median(runs) * 1000:,.0f} / {p95 * 1000:,.0f}"


def table_rows(cpu: Mapping[str, tuple[list[float], list[float]]], *, ratio: bool = False) -> list[str]:
    """One markdown row a case: A's and B's ``ms``, and with ``ratio`` B's median over A's."""
    return [f"| {name} | {ms(a_s)} | {ms(b_s)} |"
            + (f" {statistics.median(b_s) / statistics.median(a_s):.2f} |" if ratio else "")
            for name, (a_s, b_s) in cpu.items()]
