"""The pure parts of alert delivery: the retry schedule, Retry-After, redaction, URL checks, routing, exit codes."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from spendstream.alerting.attempt import Attempt, retry_after_s
from spendstream.alerting.delivery import AlertRouting, PassReport
from spendstream.alerting.destinations import Destination, url_problem
from spendstream.alerting.outbox import DeliveryState, RetryPolicy, after_attempt
from spendstream.alerting.redact import REDACTED, Redactor
from spendstream.sinks.store import sql_time

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
POLICY = RetryPolicy(backoff_base_s=1.0, backoff_cap_s=300.0, max_retry_after_s=3600.0, give_up_after_s=86400.0)


def test_a_first_success_or_refusal_settles_the_delivery() -> None:
    delivered = after_attempt(None, Attempt("delivered"), now=NOW, policy=POLICY)
    assert delivered == DeliveryState("delivered", 1, NOW, None, "")
    refused = after_attempt(None, Attempt("refused", "HTTP 404: no_service"), now=NOW, policy=POLICY)
    assert refused == DeliveryState("failed", 1, NOW, None, "HTTP 404: no_service")
    assert not refused.due(NOW + timedelta(days=1)) and not delivered.due(NOW + timedelta(days=1))


def test_backoff_grows_with_jitter_up_to_its_cap_and_keeps_the_first_attempt() -> None:
    rng, state = random.Random(7), None
    waits = []
    for n in range(1, 16):
        at = NOW + timedelta(hours=n)
        state = after_attempt(state, Attempt("retry", "HTTP 503"), now=at, policy=POLICY, rng=rng)
        wait_s = (state.next_attempt_at - at).total_seconds()
        assert 0 <= wait_s <= min(POLICY.backoff_cap_s, POLICY.backoff_base_s * 2 ** (n - 1))
        waits.append(wait_s)
        assert (state.outcome, state.attempts, state.first_attempt_at) == ("pending", n, NOW + timedelta(hours=1))
        assert not state.due(at) and state.due(state.next_attempt_at)
    assert max(waits[:3]) <= 4 < max(waits[8:])  # it grows
    assert len(set(waits)) == len(waits)         # and is jittered


def test_a_retry_is_never_due_again_at_the_instant_it_failed_even_as_the_table_stores_it() -> None:
    class NoWait(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return a  # full jitter can draw (nearly) zero

    for now in (NOW, NOW + timedelta(microseconds=123_456)):
        for attempt in (Attempt("retry", "HTTP 500"), Attempt("retry", "HTTP 503", retry_after_s=0.0)):
            state = after_attempt(None, attempt, now=now, policy=POLICY, rng=NoWait())
            stored = datetime.fromisoformat(sql_time(state.next_attempt_at)).replace(tzinfo=timezone.utc)
            assert stored > now and not DeliveryState("pending", 1, now, stored, "").due(now)


def test_retry_after_is_honoured_up_to_its_cap() -> None:
    asked = after_attempt(None, Attempt("retry", "HTTP 429", retry_after_s=42.0), now=NOW, policy=POLICY)
    assert asked.next_attempt_at == NOW + timedelta(seconds=42)
    greedy = after_attempt(None, Attempt("retry", "HTTP 503", retry_after_s=10**9), now=NOW, policy=POLICY)
    assert greedy.next_attempt_at == NOW + timedelta(seconds=POLICY.max_retry_after_s)


def test_a_delivery_still_failing_past_the_give_up_time_is_marked_failed() -> None:
    policy = RetryPolicy(backoff_base_s=1.0, backoff_cap_s=300.0, give_up_after_s=600.0)
    state = after_attempt(None, Attempt("retry", "HTTP 502"), now=NOW, policy=policy)
    still = after_attempt(state, Attempt("retry", "HTTP 502"), now=NOW + timedelta(seconds=60), policy=policy)
    assert still.outcome == "pending"
    gone = after_attempt(still, Attempt("retry", "HTTP 502", retry_after_s=120), now=NOW + timedelta(seconds=599),
                         policy=policy)
    assert (gone.outcome, gone.attempts, gone.next_attempt_at) == ("failed", 3, None)
    assert gone.detail == "gave up after 3 attempts over 599 s: HTTP 502"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_s("7") == 7.0 and retry_after_s("-3") == 0.0 and retry_after_s(None) is None
    assert retry_after_s("inf") is None and retry_after_s("nan") is None and retry_after_s("soon") is None
    assert retry_after_s("Mon, 30 Nov 2026 12:01:30 GMT", now=NOW) == 90.0
    assert retry_after_s("Mon, 30 Nov 2026 11:00:00 GMT", now=NOW) == 0.0


def test_redaction_removes_a_destinations_url_parts_and_keys_in_every_spelling() -> None:
    url = "https://hooks.slack.com/services/T0AB12CD/B0EF34GH/Zx9Yw8Vu7Ts6?x=tok3nValue"
    redactor = Redactor.for_secrets(urls=[url], keys=["R0UTINGKEY42"])
    cases = {
        "no_service: /services/T0AB12CD/B0EF34GH/Zx9Yw8Vu7Ts6": f"no_service: {REDACTED}",
        "no_service: /services/T0AB12CD/B0EF34GH": "no_service: " + "/".join(["", *[REDACTED] * 3]),
        "token Zx9Yw8Vu7Ts6 is invalid": f"token {REDACTED} is invalid",
        "b0ef34gh (lower case)": f"{REDACTED} (lower case)",
        "path=%2Fservices%2FT0AB12CD": f"path=%2F{REDACTED}%2F{REDACTED}",
        r"\/services\/T0AB12CD\/": rf"\/{REDACTED}\/{REDACTED}\/",
        "query x=tok3nValue, value tok3nValue": f"query {REDACTED}, value {REDACTED}",
        '{"routing_key":"R0UTINGKEY42"}': f'{{"routing_key":"{REDACTED}"}}',
        "key R0UTINGKEY42 unknown": f"key {REDACTED} unknown",
    }
    for text, expected in cases.items():
        assert redactor.redact(text) == expected, text


def test_redaction_catches_credential_shapes_it_was_not_told_about() -> None:
    redact = Redactor([]).redact
    assert redact("Authorization: Bearer abc.def-123") == f"Authorization: {REDACTED} {REDACTED}"
    assert redact('{"routing_key": "someone-elses"}') == f'{{"routing_key": "{REDACTED}"}}'
    assert redact("see https://u:pw@hooks.example.com/hook/abc?sig=1 now") == (
        f"see https://hooks.example.com/{REDACTED} now")
    assert redact("use xoxb-1234-5678-abcdef") == f"use {REDACTED}"
    assert redact("invalid_token: channel_not_found at http://127.0.0.1:8080") == (
        "invalid_token: channel_not_found at http://127.0.0.1:8080")


def test_redaction_leaves_short_path_segments_and_ordinary_words_alone() -> None:
    redactor = Redactor.for_secrets(urls=["http://127.0.0.1:9/in"])
    assert redactor.redact("invalid payload in body") == "invalid payload in body"
    assert redactor.redact("POST /in refused") == f"POST {REDACTED} refused"


def test_urls_that_cannot_work_are_named_without_quoting_them() -> None:
    assert url_problem("https://hooks.slack.com/services/T/B/X") is None
    assert url_problem("htps://hooks.slack.com/services/T/B/X") == "the url's scheme 'htps' is not http or https"
    assert url_problem("hooks.slack.com/services/T/B/X") == "the url does not start with http:// or https://"
    assert url_problem("Zx9Yw8Vu7Ts6abc:rest") == "the url's scheme is not http or https"
    assert url_problem("http:///path-only") == "the url has no host"
    assert Destination(name="s", kind="slack").problem() == "no url is configured"
    assert Destination(name="p", kind="pagerduty").problem() == "no routing_key is configured"
    assert Destination(name="p", kind="pagerduty", routing_key="k").problem() is None


def test_routes_must_name_defined_destinations() -> None:
    chat = {"name": "chat", "kind": "slack", "url": "https://hooks.slack.com/services/T/B/X"}
    with pytest.raises(ValidationError, match=r"not defined: \['chta'\]"):
        AlertRouting.model_validate({"destinations": [chat], "routes": [{"destination": "chta"}]})
    with pytest.raises(ValidationError, match="unique"):
        AlertRouting.model_validate({"destinations": [chat, chat]})


def test_exit_code_says_whether_anything_is_left() -> None:
    assert PassReport(delivered=3).exit_code == 0
    assert PassReport(delivered=3, pending=1).exit_code == 75
    assert PassReport(failed=1, pending=1).exit_code == 1
