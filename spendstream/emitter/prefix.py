"""Prompt-prefix fingerprints: what lets the advisor see cacheable prefixes without seeing prompts.

The service declares its static prefix (system prompt, tool definitions, a long
shared document) or passes the first N tokens; the emitter hashes it locally
(BLAKE2b, 128 bits) and counts its tokens locally. Only the hash and the count
leave the process::

    emitter.emit(from_openai_usage(response.usage, model=model, feature="support-chat",
                                   **prefix_fields(SYSTEM_PROMPT, provider="openai", model=model)))
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from spendstream.emitter.estimate import count_tokens, tokenizer_for


def fingerprint(prefix: str | Sequence[int]) -> str:
    """A stable 32-hex-digit fingerprint of prefix text or of its token ids."""
    data = prefix.encode("utf-8") if isinstance(prefix, str) else b",".join(str(t).encode() for t in prefix)
    return hashlib.blake2b(data, digest_size=16, person=b"spendstream-pfx").hexdigest()


def prefix_fields(prefix: str | Sequence[int], *, provider: str, model: str) -> dict[str, object]:
    """``prefix_fingerprint`` and ``prefix_tokens`` for a UsageEvent.

    Text is counted with the model's tokenizer where one is available offline
    (else approximately, see :mod:`spendstream.emitter.estimate`); token ids are counted as given.
    """
    tokens = len(prefix) if not isinstance(prefix, str) else count_tokens(prefix, tokenizer_for(provider, model))
    return {"prefix_fingerprint": fingerprint(prefix), "prefix_tokens": tokens}
