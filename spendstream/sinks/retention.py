"""How long rows are kept: raw events for re-pricing and audits, rollups for years.

Nothing is deleted unless configured (``SPENDSTREAM_RAW_RETENTION_DAYS``,
``SPENDSTREAM_ROLLUP_RETENTION_DAYS``, ``SPENDSTREAM_DEAD_LETTER_RETENTION_DAYS``). A worker
applies the configured TTLs at start; ClickHouse drops expired rows in its merges. Raw
events must outlive anything you may re-price, and the rollups outlive raw: once a
period's raw rows are gone, its rollup rows are all that is left of it, so the
maintainer never recomputes a period older than the raw retention (rollups.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from spendstream.sinks import rollups

log = logging.getLogger(__name__)

# table -> the time column its TTL counts from
RAW = {"usage_events": "ts", "event_conflicts": "detected_at", "cost_corrections": "repriced_at"}
# every rollup the maintainer keeps, and its bookkeeping
ROLLUPS = {rollup.name: rollup.period for rollup in rollups.all_grains()} | {
    "rollup_marks": "minute", "gpu_marks": "minute", "rollup_done": "period"}
DEAD_LETTERS = {"dead_letters": "received_at", "dead_letter_replays": "replayed_at"}


def retention_statements(*, raw_days: int | None, rollup_days: int | None,
                         dead_letter_days: int | None) -> list[str]:
    """The ALTER … MODIFY TTL statements for the configured retentions (none for what is unset)."""
    for days in (raw_days, rollup_days, dead_letter_days):
        if days is not None and not 1 <= days <= 18_250:
            raise ValueError(f"a retention of {days} days: it must be 1 to 18,250 (a TTL past 2106 overflows "
                             "ClickHouse's DateTime and would expire every row at once)")
    if raw_days is not None and rollup_days is not None and rollup_days < raw_days:
        raise ValueError(f"rollups ({rollup_days} days) must be kept at least as long as raw events ({raw_days} "
                         "days): once raw rows expire, the rollups are all that is left of their periods")
    statements = []
    for days, tables in ((raw_days, RAW), (rollup_days, ROLLUPS), (dead_letter_days, DEAD_LETTERS)):
        if days is None:
            continue
        for table, column in tables.items():
            statements.append(f"ALTER TABLE {table} MODIFY TTL toDateTime({column}) + INTERVAL {int(days)} DAY")
    return statements


def apply_retention(run: Callable[[str], None], *, raw_days: int | None, rollup_days: int | None,
                    dead_letter_days: int | None) -> None:
    for statement in retention_statements(raw_days=raw_days, rollup_days=rollup_days,
                                          dead_letter_days=dead_letter_days):
        run(statement)
        log.info("retention: %s", statement)
