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

log = logging.getLogger(__name__)

OTHER = "__other__"


class TagGuard:
    def __init__(self, limit: int = 1000) -> None:
        self.limit = limit
        self._seen: dict[str, set[str]] = {}
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
            if key not in self.folded:
                log.warning("tag %r has more than %d distinct values; new values are stored as %r",
                            key, self.limit, OTHER)
            self.folded[key] = self.folded.get(key, 0) + 1
        return out, folded
