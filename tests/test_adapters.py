"""Provider usage objects normalised into the contract's token meanings.

The inputs are the usage objects as each provider documents them.
"""

from __future__ import annotations

from types import SimpleNamespace

from spendstream.emitter import from_anthropic_usage, from_openai_usage


def test_openai_chat_completions_usage() -> None:
    usage = {
        "prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 0},
    }
    event = from_openai_usage(usage, model="gpt-4o-2024-08-06", team="search")
    # OpenAI already counts cached inside prompt and reasoning inside completion.
    assert (event.input_tokens, event.cached_input_tokens) == (2006, 1920)
    assert (event.output_tokens, event.reasoning_tokens) == (300, 128)
    assert event.provider == "openai" and event.team == "search"


def test_openai_responses_api_usage_as_sdk_object() -> None:
    usage = SimpleNamespace(
        input_tokens=328, output_tokens=52, total_tokens=380,
        input_tokens_details=SimpleNamespace(cached_tokens=256),
        output_tokens_details=SimpleNamespace(reasoning_tokens=0),
    )
    event = from_openai_usage(usage, model="gpt-4.1")
    assert (event.input_tokens, event.cached_input_tokens, event.output_tokens) == (328, 256, 52)


def test_openai_usage_without_details() -> None:
    event = from_openai_usage({"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": None},
                              model="gpt-4o-mini")
    assert (event.input_tokens, event.cached_input_tokens, event.reasoning_tokens) == (10, 0, 0)


def test_anthropic_usage_cache_tokens_are_beside_input_tokens() -> None:
    usage = {
        "input_tokens": 50, "output_tokens": 503,
        "cache_creation_input_tokens": 2048, "cache_read_input_tokens": 10000,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 2048},
    }
    event = from_anthropic_usage(usage, model="claude-sonnet-4-5")
    assert event.input_tokens == 50 + 2048 + 10000
    assert (event.cached_input_tokens, event.cache_write_tokens) == (10000, 2048)
    assert event.output_tokens == 503
    assert event.tags["cache_write_1h_tokens"] == "2048"


def test_anthropic_usage_without_cache_fields() -> None:
    event = from_anthropic_usage({"input_tokens": 12, "output_tokens": 6}, model="claude-3-5-haiku-latest")
    assert (event.input_tokens, event.cached_input_tokens, event.cache_write_tokens) == (12, 0, 0)
    assert event.tags == {}
