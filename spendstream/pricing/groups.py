"""Calls grouped by what decides their price, in O(n) where the keys are dense.

A group is one provider, model, mode, service tier and minute (and team, customer,
region, inference profile where an override names them); its first call stands
for it when the group's price is looked up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from spendstream.pricing.engine import UsageColumns


def taken(values: Sequence[Any] | pa.Array, rows: np.ndarray) -> list[Any]:
    """``values`` at ``rows``, as Python objects."""
    if isinstance(values, pa.Array):
        return values.take(pa.array(rows)).to_pylist()
    return [values[r] for r in rows.tolist()]


def codes(values: Sequence[Any] | pa.Array, keep: set[str] | None = None) -> tuple[np.ndarray, int]:
    """Dense integer codes for a string column (null is a value of its own) and how many there are.

    With ``keep``, every value not in it counts as null.
    """
    array = values if isinstance(values, pa.Array) else pa.array(values, pa.string())
    if keep is not None:
        array = pc.if_else(pc.is_in(array, pa.array(sorted(keep), pa.string())), array,
                           pa.scalar(None, pa.string()))
    encoded = array.dictionary_encode()
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    return codes, len(encoded.dictionary) + 1


def group(cols: UsageColumns, *, teams: set[str], customers: set[str], place: bool = False
          ) -> tuple[np.ndarray, np.ndarray]:
    """(group index of each call, one representative call per group)."""
    n = len(cols)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    minutes = cols.ts_ms // 60_000
    parts = [codes(cols.provider), codes(cols.model), codes(cols.mode), codes(cols.service_tier),
             (minutes - minutes.min(), int(minutes.max() - minutes.min()) + 1)]
    if teams:
        parts.append(codes(cols.team, teams))
    if customers:
        parts.append(codes(cols.customer, customers))
    if place:
        parts += [codes(column) for column in (cols.region, cols.inference_profile) if column is not None]
    key = np.zeros(n, dtype=np.int64)
    size = 1
    for part, cardinality in parts:
        if size * cardinality >= 2**62:  # re-number the groups so far densely before going on
            key = np.unique(key, return_inverse=True)[1].astype(np.int64)
            size = int(key.max()) + 1
        key = key * cardinality + part
        size *= cardinality
    if size <= 4 * n + 1_000_000:  # dense keys: factorise in O(n)
        present = np.zeros(size, dtype=bool)
        present[key] = True
        ids = np.cumsum(present) - 1
        group_of = ids[key]
    else:
        group_of = np.unique(key, return_inverse=True)[1].reshape(-1)
    rep = np.empty(int(group_of.max()) + 1, dtype=np.int64)
    rep[group_of[::-1]] = np.arange(n - 1, -1, -1)  # the first call of each group
    return group_of, rep
