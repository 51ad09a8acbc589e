"""Start-up waits for Kafka, ClickHouse and the embedded data directory, and gives up clearly."""

from __future__ import annotations


def test_backoff_stays_capped_however_many_attempts_came_before() -> None:
    from spendstream.emitter.backoff import backoff_s

    # A writer retrying through a long outage, or start-up with no deadline, passes a thousand attempts.
    assert all(0 <= backoff_s(attempt, base_s=0.2, cap_s=10.0) <= 10.0 for attempt in (0, 63, 64, 1_100, 10**6))
