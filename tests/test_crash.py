"""kill -9 under load, a broker restart between runs, duplicate and conflicting sends: no total changes."""

from __future__ import annotations

import pytest

from spendstream.demo.crash import run_harness

pytestmark = pytest.mark.integration


def test_crashes_rebalances_restarts_and_duplicates_change_no_total(tmp_path) -> None:
    result = run_harness(runs=2, cycles=3, rate=500, duplicate_share=0.1, conflict_share=0.02, seed=7,
                         workdir=tmp_path, log=lambda line: None)
    assert result.kills == 6 and result.duplicates_sent > 0 and result.conflicts_sent > 0
    assert result.conflicts_recorded == result.conflicts_sent  # every conflicting copy recorded, none applied
    assert result.stored_rows_after_merge == result.stored_distinct  # one row per id: no copy counted twice
    assert result.stored_distinct == result.emitted_distinct > 0
    assert result.stored_total == result.expected_total > 0
    assert result.stored_by_team == result.expected_by_team == result.stored_by_team_view
    assert result.stored_by_team_rollup == result.expected_by_team  # the minute rollup, once caught up
