"""The fixed universe of the read-side benchmark's traffic: models, cardinalities, and what each feature does.

Models are chosen from the bundled price catalog (27 it prices, 3 self-hosted ones it
cannot, each on its own GPU deployment); teams, features, customers and services
are Zipf-sized; every draw is seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

# 27 models the catalog prices, then 3 self-hosted ones it cannot (each on a GPU deployment).
PRICED_MODELS = (
    ("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("openai", "gpt-4.1"), ("openai", "gpt-4.1-mini"),
    ("openai", "gpt-4.1-nano"), ("openai", "o3"), ("openai", "o4-mini"), ("openai", "gpt-5"),
    ("openai", "gpt-5-mini"), ("openai", "gpt-5-nano"),
    ("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-3-5-haiku-latest"), ("anthropic", "claude-opus-4-1"),
    ("anthropic", "claude-haiku-4-5"), ("anthropic", "claude-sonnet-4"),
    ("google", "gemini-2.5-flash"), ("google", "gemini-2.5-pro"), ("google", "gemini-2.5-flash-lite"),
    ("mistral", "mistral-large-latest"), ("mistral", "mistral-small-latest"),
    ("groq", "llama-3.3-70b-versatile"), ("groq", "llama-3.1-8b-instant"),
    ("deepseek", "deepseek-chat"), ("deepseek", "deepseek-reasoner"),
    ("aws", "amazon.nova-pro-v1:0"), ("x-ai", "grok-3"), ("x-ai", "grok-3-mini"),
)
SELF_HOSTED = (("self-hosted", "acme-llama-3-70b-ft", "gpu-llama-70b"),
               ("self-hosted", "acme-qwen-2.5-32b", "gpu-qwen-32b"),
               ("self-hosted", "acme-mistral-7b-ft", "gpu-mistral-7b"))
MODELS = PRICED_MODELS + tuple((p, m) for p, m, _ in SELF_HOSTED)
REASONING = {"o3", "o4-mini", "gpt-5", "gpt-5-mini", "gpt-5-nano", "deepseek-reasoner", "gemini-2.5-pro"}


@dataclass(frozen=True, slots=True)
class Shape:
    """Cardinalities and rates of the generated traffic."""

    days: int = 28
    teams: int = 24
    features: int = 200
    customers: int = 50_000
    services: int = 40
    users: int = 100_000
    retry_share: float = 0.02      # of events: attempt 2 of a request whose attempt 1 failed
    duplicate_share: float = 0.05  # of events: stored a second time, identical
    late_share: float = 0.001      # of events: ingested 1-6 hours after their ts


def hex_ids(rng: np.random.Generator, n: int, *, nbytes: int = 16) -> pa.Array:
    """``n`` random lowercase hex strings of ``2 * nbytes`` characters (uuid4().hex-like), vectorised."""
    pairs = np.array([f"{i:02x}" for i in range(256)], dtype="S2").view(np.uint16)
    chars = np.ascontiguousarray(pairs[rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)])
    return pa.array(chars.view(f"S{2 * nbytes}").ravel()).cast(pa.string())


def zipf(rng: np.random.Generator, n: int, size: int, *, s: float) -> np.ndarray:
    """``size`` draws of ranks 0..n-1 with Zipf(s) weights."""
    cdf = np.cumsum(1.0 / np.arange(1, n + 1) ** s)
    return np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(size)), n - 1)


class Keys:
    """The fixed universe of keys (teams, features, customers, ...) and how each feature behaves."""

    def __init__(self, shape: Shape, rng: np.random.Generator) -> None:
        f = shape.features
        self.shape = shape
        self.feature_names = pa.array([f"feature-{k:03d}" for k in range(f)])
        self.team_names = pa.array([f"team-{k:02d}" for k in range(shape.teams)])
        self.customer_names = pa.array([f"cust-{k:05d}" for k in range(shape.customers)])
        self.service_names = pa.array([f"svc-{k:02d}" for k in range(shape.services)])
        self.users = hex_ids(rng, shape.users, nbytes=8)
        # every team owns a feature; the rest go to teams by Zipf size; a feature lives in one service
        self.team_of = np.concatenate([np.arange(shape.teams), zipf(rng, shape.teams, f - shape.teams, s=0.8)])
        self.service_of = np.concatenate([np.arange(shape.services),
                                          zipf(rng, shape.services, f - shape.services, s=0.7)])
        # every model is some feature's main model; up to two more models share a feature's traffic
        main = rng.permutation(np.concatenate([np.arange(len(MODELS)),
                                               zipf(rng, len(MODELS), f - len(MODELS), s=0.9)]))
        others = rng.integers(0, len(MODELS), size=(f, 2))
        self.models = np.column_stack([main, others])
        share = np.column_stack([np.ones(f), rng.random((f, 2)) < 0.4]) * np.array([0.7, 0.2, 0.1])
        self.model_cdf = np.cumsum(share / share.sum(axis=1, keepdims=True), axis=1)
        self.cache_share = np.where(rng.random(f) < 0.4, rng.uniform(0.2, 0.8, f), 0.0)
        self.batch_feature = rng.random(f) < 0.08
        self.input_scale = rng.lognormal(0, 0.7, f)
        self.output_scale = rng.lognormal(0, 0.5, f)
        self.fingerprints = hex_ids(rng, f * 8)  # eight stable prompt prefixes per feature
        self.prefix_tokens = rng.integers(512, 8_000, f * 8)
        self.routes = pa.array([f"/api/v{1 + k % 3}/route-{k:02d}" for k in range(60)])
        self.experiments = pa.array([f"exp-{k:02d}" for k in range(20)])
        self.provider_names = pa.array([p for p, _ in MODELS])
        self.model_names = pa.array([m for _, m in MODELS])
        self.deployments = pa.array([None] * len(PRICED_MODELS) + [d for _, _, d in SELF_HOSTED], pa.string())
        self.batchable = np.zeros(len(MODELS), bool)  # set from the price catalog by the Generator
        self.priority = np.zeros(len(MODELS), bool)
        self.openai = np.array([p == "openai" for p, _ in MODELS])
        self.reasoning = np.array([m in REASONING for _, m in MODELS])
