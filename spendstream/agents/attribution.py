"""Attribution guard: free-form tags must not explode the tables built on them.

team, feature, customer, environment and user hash are first-class columns. Free
tags are bounded per event by the contract (32 keys, short values); this guard
bounds them across events: once a tag key has ``limit`` distinct values in this
worker, further new values of that key are stored as ``__other__`` and the key is
listed in the row's ``folded_tags``, so what was folded is counted, never lost
silently::

    SELECT arrayJoin(folded_tags) AS tag, count() FROM usage_events GROUP BY tag

The limit is per worker process (N workers keep at most N × limit values a key).
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.batches import OTHER

log = logging.getLogger(__name__)

# Above this many distinct tag keys in one batch, folding goes entry by entry (see fold_entries).
_KEYS_FOR_COLUMNS = 256


class TagGuard:
    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._seen: dict[str, set[str]] = {}
        self._seen_arrays: dict[str, pa.Array] = {}  # the same sets as Arrow arrays, for pc.is_in
        self.folded: dict[str, int] = {}

    def fold(self, tags: dict[str, str]) -> tuple[dict[str, str], list[str]]:
        """``tags`` with over-limit values replaced by ``__other__``, and the keys that were folded."""
        if not tags:
            return tags, []
        out, folded = {}, []
        for key, value in tags.items():
            seen = self._seen.setdefault(key, set())
            if value in seen or len(seen) < self.limit:
                seen.add(value)
                out[key] = value
                continue
            out[key] = OTHER
            folded.append(key)
            self._count_folded(key, 1)
        return out, folded

    def fold_entries(self, keys: pa.Array, values: pa.Array) -> np.ndarray:
        """Which tag entries to store as ``__other__``: a mask over (key, value) pairs in event order.

        The same outcome as :meth:`fold` event after event (a key keeps its first
        ``limit`` distinct values, for good), computed a key at a time over columns.
        """
        folded = np.zeros(len(keys), dtype=bool)
        if len(keys) == 0:
            return folded
        encoded = pc.dictionary_encode(keys)
        names = encoded.dictionary.to_pylist()
        if len(names) > _KEYS_FOR_COLUMNS:  # many distinct keys (unusual): per-key array work would dominate
            for i, (key, value) in enumerate(zip(keys.to_pylist(), values.to_pylist(), strict=True)):
                folded[i] = bool(self.fold({key: value})[1])
            return folded
        codes = encoded.indices.to_numpy()
        order = np.argsort(codes, kind="stable")  # entries grouped by key, each group in event order
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
        for code, key in enumerate(names):
            at = order[bounds[code]:bounds[code + 1]]
            over = self._over_limit(key, values.take(pa.array(at)))
            if over.any():
                folded[at[over]] = True
                self._count_folded(key, int(over.sum()))
        return folded

    def _over_limit(self, key: str, values: pa.Array) -> np.ndarray:
        seen = self._seen.setdefault(key, set())
        if len(seen) < self.limit:
            known = pc.is_in(values, value_set=self._seen_array(key))
            new = pc.unique(values.filter(pc.invert(known)))  # in order of first appearance
            if len(new):
                seen.update(new[:self.limit - len(seen)].to_pylist())
                self._seen_arrays.pop(key, None)
        return pc.invert(pc.is_in(values, value_set=self._seen_array(key))).to_numpy(zero_copy_only=False)

    def _seen_array(self, key: str) -> pa.Array:
        if key not in self._seen_arrays:
            self._seen_arrays[key] = pa.array(sorted(self._seen[key]), pa.string())
        return self._seen_arrays[key]

    def _count_folded(self, key: str, count: int) -> None:
        if key not in self.folded:
            log.warning("tag %r has more than %d distinct values; new values are stored as %r",
                        key, self.limit, OTHER)
        self.folded[key] = self.folded.get(key, 0) + count
