"""Provider usage objects normalised into the contract's token meanings.

The inputs are the usage objects as each provider documents them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from types import SimpleNamespace

import pytest

from spendstream.emitter import (
    from_anthropic_usage,
    from_bedrock_converse_usage,
    from_gemini_usage,
    from_openai_usage,
    from_otel_genai_attributes,
)
from spendstream.pricing import Pricer

TS = datetime(2025, 8, 1, tzinfo=timezone.utc)


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
    assert event.cache_write_1h_tokens == 2048


def test_anthropic_usage_without_cache_fields() -> None:
    event = from_anthropic_usage({"input_tokens": 12, "output_tokens": 6}, model="claude-3-5-haiku-latest")
    assert (event.input_tokens, event.cached_input_tokens, event.cache_write_tokens) == (12, 0, 0)
    assert event.tags == {}


def test_gemini_thoughts_are_beside_candidates_and_cached_inside_prompt() -> None:
    # REST usageMetadata of a gemini-2.5-flash call with implicit caching and thinking
    usage = {"promptTokenCount": 12_000, "cachedContentTokenCount": 8_000, "candidatesTokenCount": 300,
             "thoughtsTokenCount": 1_200, "totalTokenCount": 13_500}
    event = from_gemini_usage(usage, model="gemini-2.5-flash", ts=TS)
    assert (event.input_tokens, event.cached_input_tokens) == (12_000, 8_000)
    assert (event.output_tokens, event.reasoning_tokens) == (1_500, 1_200)
    assert event.input_tokens + event.output_tokens == usage["totalTokenCount"]
    # $0.30 in, $0.03 cached, $2.50 out (thinking included) per million
    record = Pricer().price(event)
    assert record.total_cost == (Decimal(4_000) * Decimal("0.30") + Decimal(8_000) * Decimal("0.03")
                                 + Decimal(1_500) * Decimal("2.50")) / 1_000_000


def test_gemini_python_sdk_snake_case_and_tool_use_prompt() -> None:
    usage = SimpleNamespace(prompt_token_count=100, cached_content_token_count=None, candidates_token_count=20,
                            thoughts_token_count=None, tool_use_prompt_token_count=30)
    event = from_gemini_usage(usage, model="gemini-2.0-flash")
    assert (event.input_tokens, event.cached_input_tokens, event.output_tokens, event.reasoning_tokens) == (
        130, 0, 20, 0)


def test_bedrock_converse_cache_tokens_are_beside_input_tokens() -> None:
    usage = {"inputTokens": 500, "outputTokens": 200, "totalTokens": 4_700,
             "cacheReadInputTokens": 3_000, "cacheWriteInputTokens": 1_000}
    event = from_bedrock_converse_usage(usage, model="us.anthropic.claude-3-5-sonnet-20240620-v1:0", ts=TS)
    assert (event.input_tokens, event.cached_input_tokens, event.cache_write_tokens) == (4_500, 3_000, 1_000)
    assert event.input_tokens + event.output_tokens == usage["totalTokens"]
    record = Pricer().price(event)  # $3 in, $0.30 cache read, $3.75 cache write, $15 out per million
    assert record.total_cost == (500 * Decimal(3) + 3_000 * Decimal("0.3") + 1_000 * Decimal("3.75")
                                 + 200 * Decimal(15)) / 1_000_000


def test_otel_genai_attributes() -> None:
    attributes = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
                  "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 1_000,
                  "gen_ai.usage.cache_read.input_tokens": 600, "gen_ai.usage.output_tokens": 80}
    event = from_otel_genai_attributes(attributes, team="search")
    assert (event.provider, event.model, event.team) == ("openai", "gpt-4o-2024-08-06", "search")
    assert (event.input_tokens, event.cached_input_tokens, event.output_tokens) == (1_000, 600, 80)


def test_otel_older_attribute_names_and_missing_model() -> None:
    event = from_otel_genai_attributes({"gen_ai.system": "anthropic", "gen_ai.request.model": "claude-3-haiku",
                                        "gen_ai.usage.prompt_tokens": 7, "gen_ai.usage.completion_tokens": 3})
    assert (event.provider, event.input_tokens, event.output_tokens) == ("anthropic", 7, 3)
    with pytest.raises(ValueError, match="gen_ai.request.model"):
        from_otel_genai_attributes({"gen_ai.system": "openai", "gen_ai.usage.input_tokens": 1})
