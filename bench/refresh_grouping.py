"""The hourly refresh's grouping step, before and after: which pairs to keep and each row's subject index.

A month of subject-hours at the 5M-event read-scale store's keys (20 teams, 200 features, 50,000
customers, their feature × customer pairs) is ~10^6 rows. Before, numpy's ``unique`` sorted every
row's string, twice (the pairs, then every subject); after, Arrow's hash grouping finds the distinct
names and only those are sorted (:func:`spendstream.detect.baseline.group_subjects`). Both must give
the same subjects, indices and kept rows; the script checks that, then times each (median of ``--runs``).

    PYTHONPATH=. .venv/bin/python bench/refresh_grouping.py --rows 1000000 --runs 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.detect import baseline


def synthetic(rows: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    zipf = lambda n: (w := 1 / np.arange(1, n + 1)) / w.sum()  # noqa: E731
    kind = rng.choice(4, size=rows, p=[0.02, 0.08, 0.45, 0.45])
    team = rng.integers(0, 20, size=rows)
    feature = rng.choice(200, size=rows, p=zipf(200))
    customer = rng.choice(50_000, size=rows, p=zipf(50_000))
    names = np.where(kind == 0, np.char.add("team=team-", team.astype(str)),
                     np.where(kind == 1, np.char.add("feature=feat-", feature.astype(str)),
                              np.where(kind == 2, np.char.add("customer=cust-", customer.astype(str)),
                                       np.char.add(np.char.add("feature=feat-", feature.astype(str)),
                                                   np.char.add(",customer=cust-", customer.astype(str))))))
    order = np.argsort(names, kind="stable")  # the refresh's query orders by subject, hour
    return pa.table({"subject": pa.array(names[order]), "h": pa.array(rng.integers(0, 720, size=rows)[order]),
                     "cost": pa.array(rng.gamma(0.5, 2.0, size=rows)[order])})


def before(hours: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The refresh's grouping as it was (numpy ``unique`` over every row's string)."""
    pair = pc.match_substring(hours["subject"], baseline.PAIR_MARK).to_numpy(zero_copy_only=False)
    keep = np.ones(len(pair), dtype=bool)
    if pair.any():
        pairs, row = np.unique(hours["subject"].filter(pair).to_numpy(zero_copy_only=False).astype(str),
                               return_inverse=True)
        total = np.bincount(row, weights=hours["cost"].to_numpy()[pair], minlength=len(pairs))
        kept = np.zeros(len(pairs), dtype=bool)
        kept[np.argsort(-total, kind="stable")[:baseline.PAIR_SUBJECTS]] = True
        keep[np.flatnonzero(pair)] = kept[row]
    subjects, row_of = np.unique(hours.filter(keep)["subject"].to_numpy(zero_copy_only=False).astype(str),
                                 return_inverse=True)
    return keep, subjects, row_of


def after(hours: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keep = baseline._costliest_pairs(hours)
    subjects, row_of = baseline.group_subjects(hours.filter(keep)["subject"])
    return keep, subjects, row_of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    hours = synthetic(args.rows)
    old, new = before(hours), after(hours)
    assert all(np.array_equal(a, b) for a, b in zip(old, new, strict=True)), "before and after disagree"
    print(f"{hours.num_rows:,} rows, {len(new[1]):,} subjects kept, {int((~new[0]).sum()):,} rows of small pairs "
          "dropped; identical before and after")
    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(args.runs):  # interleaved: load on a shared machine varies
        for name, step in (("before", before), ("after", after)):
            started = time.perf_counter()
            step(hours)
            times[name].append(time.perf_counter() - started)
    b, a = (float(np.median(times[k])) for k in ("before", "after"))
    print(f"median of {args.runs}: before {b * 1000:.0f} ms, after {a * 1000:.0f} ms ({b / a:.1f}x)")


if __name__ == "__main__":
    main()
