"""The LiteLLM callback, driven by the real LiteLLM SDK: mock responses, and a loopback provider for retries."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator

import pytest

from spendstream.schemas import UsageEvent
from tests.provider import Answer, ProviderServer, openai_chat

# LiteLLM fetches its price map at import unless told to use the bundled copy: tests stay offline
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm = pytest.importorskip("litellm")
from spendstream.emitter.litellm import SpendstreamLogger, event_from_payload  # noqa: E402

HI = [{"role": "user", "content": "hi"}]
KEY_HASH = "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"  # LiteLLM's sha256 of a virtual key


class Recorder:
    """Stands in for the Emitter (not under test here): keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def emit(self, event: UsageEvent) -> bool:
        self.events.append(event)
        return True


def _wait_for(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """LiteLLM runs callbacks on its own worker threads: wait (bounded) until they have run."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def registered() -> Iterator[tuple[SpendstreamLogger, Recorder]]:
    # One logger for the module: LiteLLM copies `callbacks` into its own success/failure lists on first
    # use, so a logger swapped in later would not see every kind of event.
    recorder = Recorder()
    logger = SpendstreamLogger(emitter=recorder, environment="prod", service="gateway")
    saved = litellm.callbacks
    litellm.callbacks = [logger]
    yield logger, recorder
    litellm.callbacks = saved


@pytest.fixture
def recorded(registered) -> tuple[SpendstreamLogger, Recorder]:
    logger, recorder = registered
    time.sleep(0.3)  # a late callback of the previous test lands before the slate is wiped
    recorder.events.clear()
    return logger, recorder


def test_a_call_becomes_an_event_with_usage_and_attribution(recorded) -> None:
    logger, recorder = recorded
    response = litellm.completion(
        model="gpt-4o-mini", messages=HI, mock_response="Hello there",
        metadata={"tags": ["feature:search", "beta"], "spend_logs_metadata": {"customer": "acme", "ticket": 42},
                  "user_api_key_alias": "search-prod", "user_api_key_hash": KEY_HASH,
                  "user_api_key_team_alias": "search", "user_api_key_user_id": "alice@example.com"})
    _wait_for(lambda: len(recorder.events) >= 1)
    [event] = recorder.events
    assert (event.provider, event.model, event.status) == ("openai", "gpt-4o-mini", "ok")
    assert (event.input_tokens, event.output_tokens) == (response.usage.prompt_tokens, response.usage.completion_tokens)
    assert (event.team, event.customer, event.environment, event.service) == ("search", "acme", "prod", "gateway")
    assert event.tags == {"feature": "search", "beta": "", "ticket": "42", "litellm_key_alias": "search-prod",
                          "litellm_key_hash": KEY_HASH}
    assert event.user_hash and "alice" not in event.user_hash  # a hash, never the id
    assert event.latency_ms is not None and event.attempt == 1


def test_a_rate_limited_call_is_counted_and_litellm_raises_as_usual(recorded) -> None:
    logger, recorder = recorded
    with pytest.raises(litellm.RateLimitError):
        litellm.completion(model="gpt-4o-mini", messages=HI, mock_response=litellm.RateLimitError(
            message="slow down", llm_provider="openai", model="gpt-4o-mini"))
    _wait_for(lambda: len(recorder.events) >= 1)
    [event] = recorder.events
    assert (event.status, event.http_status, event.input_tokens) == ("rate_limited", 429, 0)


def test_a_stream_reports_usage_and_time_to_first_token(recorded) -> None:
    _, recorder = recorded
    text = "".join(c.choices[0].delta.content or "" for c in litellm.completion(
        model="gpt-4o-mini", messages=HI, mock_response="Hello there, streamed", stream=True))
    assert text == "Hello there, streamed"
    _wait_for(lambda: len(recorder.events) >= 1)
    [event] = recorder.events
    assert event.output_tokens > 0 and event.ttft_ms is not None and event.ttft_ms <= event.latency_ms


def test_an_async_call_is_one_event_even_if_litellm_logs_it_twice(recorded) -> None:
    logger, recorder = recorded

    async def run() -> None:
        await litellm.acompletion(model="gpt-4o-mini", messages=HI, mock_response="Hello")
        await asyncio.sleep(0.5)  # let LiteLLM's logging worker run on this loop

    asyncio.run(run())
    _wait_for(lambda: len(recorder.events) >= 1)
    time.sleep(0.5)  # a second logging of the same call, if LiteLLM makes one, would come now
    assert len(recorder.events) == 1 and recorder.events[0].status == "ok"


def test_the_routers_retries_are_attempts_of_one_request(recorded) -> None:
    _, recorder = recorded
    provider = ProviderServer().start()
    try:
        provider.script(Answer(429, {"error": {"message": "slow down", "type": "rate_limit"}}),
                        Answer(body=openai_chat()))
        router = litellm.Router(model_list=[{"model_name": "fast", "litellm_params": {
            "model": "openai/gpt-4o-mini", "api_key": "test-key", "api_base": f"{provider.base_url}/v1"}}],
            num_retries=2, retry_after=0)
        router.completion(model="fast", messages=HI)
        _wait_for(lambda: len(recorder.events) >= 2)
    finally:
        provider.stop()
    assert len(provider.requests) == 2
    events = sorted(recorder.events, key=lambda e: e.attempt)
    assert [(e.attempt, e.status, e.http_status) for e in events] == [(1, "rate_limited", 429), (2, "ok", None)]
    assert len({e.request_id for e in events}) == 1 and len({e.event_id for e in events}) == 2
    assert (events[1].input_tokens, events[1].cached_input_tokens) == (1200, 1024)


def test_a_payload_the_contract_cannot_take_is_counted_not_raised() -> None:
    logger = SpendstreamLogger(emitter=Recorder())
    logger.log_success_event({"standard_logging_object": None}, None, None, None)
    logger.log_success_event({"standard_logging_object": {"id": "x", "status": "success", "prompt_tokens": -1}},
                             None, None, None)
    assert logger.stats()["failed"] == 2


def test_anthropic_cache_counts_kept_beside_the_prompt_count_are_folded_in() -> None:
    payload = {"id": "c1", "status": "success", "custom_llm_provider": "anthropic", "model": "claude-sonnet-4-6",
               "metadata": {"usage_object": {"prompt_tokens": 100, "completion_tokens": 5,
                                             "cache_read_input_tokens": 80, "cache_creation_input_tokens": 300}}}
    event = event_from_payload(payload)
    assert (event.input_tokens, event.cached_input_tokens, event.cache_write_tokens) == (400, 80, 300)


def test_with_no_emitter_address_each_call_is_counted_and_the_log_says_what_to_set(monkeypatch, caplog) -> None:
    monkeypatch.delenv("SPENDSTREAM_KAFKA_BOOTSTRAP", raising=False)
    logger = SpendstreamLogger()
    payload = {"id": "c1", "status": "success", "custom_llm_provider": "openai", "model": "gpt-4o-mini"}
    with caplog.at_level("WARNING", logger="spendstream.emitter.litellm"):
        logger.log_success_event({"standard_logging_object": payload}, None, None, None)
    assert logger.stats()["failed"] == 1
    assert "SPENDSTREAM_KAFKA_BOOTSTRAP" in caplog.text
