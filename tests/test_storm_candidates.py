"""Which fast-window rows a retry-storm pass keeps (``retry_storm._candidates``), chosen in Arrow.

A pair is kept when it can storm (its failures summed over providers), loops on one request, or has an open
incident; a customer when it can fire (failures, a request's attempts, a shape's repeats in the fast or the slow
window) or has an open incident; features always. A customer only a loop names is judged on its repeats, and one
left out leaves the loops too. Pure: the rows are what ``fast_rows`` returns, as an Arrow table.
"""

from __future__ import annotations

import pyarrow as pa

from spendstream.detect.retry_storm import _candidates
from spendstream.detect.storm import RetryStormRule

RULE = RetryStormRule()  # min_failed 6, burn_now_failed 3, loop_attempts 8, loop_repeats 12, loop_slow_repeats 40


def _fast(rows: list[tuple[str, str, float, float | None]]) -> pa.Table:
    return pa.table({"subject": pa.array([r[0] for r in rows], pa.string()),
                     "provider": pa.array([r[1] for r in rows], pa.string()),
                     "attempts": pa.array([100.0] * len(rows), pa.float64()),
                     "failed": pa.array([r[2] for r in rows], pa.float64()),
                     "max_attempt": pa.array([r[3] for r in rows], pa.float64())})


def test_candidates_keep_what_can_fire_summed_over_providers_and_drop_the_rest_from_rows_and_loops() -> None:
    fast = _fast([
        ("feature=f", "a", 0.0, 1.0),                        # a feature: always (the providers' totals sum them)
        ("feature=f,customer=split", "a", 3.0, 2.0),         # 3 + 3 over two providers: can storm
        ("feature=f,customer=split", "b", 3.0, 1.0),
        ("feature=f,customer=few", "a", 5.0, 2.0),           # 5 failures, no loop: left out
        ("feature=f,customer=retried", "a", 0.0, 8.0),       # one request's 8 attempts: a loop
        ("feature=f,customer=held", "a", 0.0, 1.0),          # an open incident
        ("feature=f,customer=unknown", "a", 0.0, None),      # no attempt number: as 0
        ("customer=failing", "a", 2.0, 1.0),                 # 2 + 1: a burn's "still failing now" minimum
        ("customer=failing", "b", 1.0, None),
        ("customer=quiet", "a", 2.0, 1.0),                   # 2 failures, repeats below a loop: left out
        ("customer=shaped", "a", 0.0, 1.0),                  # a shape repeated 12 times in the window
        ("customer=slowly", "a", 0.0, 1.0),                  # 40 repeats over the slow window
    ])
    loops = {"customer=quiet": (3.0, 0.1), "customer=shaped": (12.0, 0.5), "customer=only-loop": (12.0, 0.2),
             "customer=only-short": (2.0, 0.0), "feature=f": (2.0, 0.0)}
    slowly = {"customer=slowly": (40.0, 1.0), "customer=only-slow": (39.0, 0.3)}
    rows, kept_loops, kept_slowly = _candidates(RULE, fast, loops, slowly, keep={"feature=f,customer=held"})
    assert [(r["subject"], r["provider"]) for r in rows] == [
        ("feature=f", "a"), ("feature=f,customer=split", "a"), ("feature=f,customer=split", "b"),
        ("feature=f,customer=retried", "a"), ("feature=f,customer=held", "a"), ("customer=failing", "a"),
        ("customer=failing", "b"), ("customer=shaped", "a"), ("customer=slowly", "a")]
    assert rows[0] == {"subject": "feature=f", "provider": "a", "attempts": 100.0, "failed": 0.0, "max_attempt": 1.0}
    assert kept_loops == {"customer=shaped": (12.0, 0.5), "customer=only-loop": (12.0, 0.2), "feature=f": (2.0, 0.0)}
    assert kept_slowly == {"customer=slowly": (40.0, 1.0)}


def test_candidates_of_an_empty_window_keep_the_customers_that_loop() -> None:
    loops = {"customer=a": (12.0, 1.0), "customer=b": (1.0, 0.0)}
    rows, kept_loops, kept_slowly = _candidates(RULE, pa.table({}), loops, {"customer=b": (2.0, 0.0)},
                                                keep={"customer=b"})
    assert (rows, kept_loops, kept_slowly) == ([], {"customer=a": (12.0, 1.0), "customer=b": (1.0, 0.0)},
                                               {"customer=b": (2.0, 0.0)})
