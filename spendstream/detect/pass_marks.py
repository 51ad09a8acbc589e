"""The rollup watermarks of one detection pass: computed once, handed to every detector that reads rollups.

Budgets (their layers) and retry storms (``feature_failures``, ``loop_shapes``, ``customer_hours``) each
computed their rollups' watermarks in a statement of their own; that statement reads ``rollup_state``,
``rollup_marks`` since the oldest ``through`` and ``rollup_done``, a fixed cost whatever the rollups asked, so a
pass paid it twice. One statement for both (:func:`~spendstream.sinks.rollups.watermarks`) stands for the
same SQL a moment earlier, as each detector's own did: an event marked after it is read by the next pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from spendstream.detect import budgets as budget_reads
from spendstream.detect import retry_storm
from spendstream.sinks import rollups
from spendstream.sinks.store import TextQuerier


def pass_marks(querier: TextQuerier, budgets: Sequence[budget_reads.Budget]) -> dict[str, datetime]:
    """Every watermark the budgets' reads and a retry-storm pass need, in one statement: rollup name -> watermark."""
    grains = {r.name: r for r in (*budget_reads.layers_of(budgets), *retry_storm.ROLLUPS)}
    return rollups.watermarks(querier, list(grains.values()))
