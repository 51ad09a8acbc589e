"""Seeded evaluation traffic, per minute and per leaf (one team × feature × customer), with incidents and controls.

What is real: the per-minute arrival shape and the request sizes come from a trace
(:mod:`.traces`). What is generated (seeded), and how:

- **keys**: 250 leaves; 60 features in 10 teams, 200 customers, both Zipf-weighted; a
  leaf's peak rate is Zipf over leaves (300 requests/min for the largest, ~0.7 for the
  smallest), so most keys are small and noisy, as in production;
- **profile**: a daily curve peaking at a per-leaf hour (9–16 UTC), weekends at 30–80 %;
- **bursts**: the trace's per-minute arrivals, entered at an independent random phase for
  every leaf and every hour (the same hour is never tiled), times Poisson noise;
- **sizes**: a minute's cost is the sum of its requests' costs, each resampled from the
  trace's token counts (output ×4) at the leaf's model price (mean $0.05 × 0.2–1.5),
  drawn as a Gamma with that sum's exact mean and variance (cheap, the same two moments);
- **failures**: 1.5–2.2 % of requests fail once and are retried (failed attempts billed at a
  quarter of a request: timeouts and invalid outputs are billed, 429s are not); four
  provider blips a day of 2–4 min at 35 % failures on one provider;
- **negative controls** (every day, in history too): a nightly job at 02:00 ± 5 min, a
  weekday-only job at 09:00 ± 5 min, and a lunch peak (12:00–13:00, weekdays, 8×); and two
  drawn apart (``EXTRA_CONTROLS``): a busy key with its ordinary bursts, and a month-end job
  seen once before (a "month" is ``MONTH_DAYS`` here: the world is three weeks long);
- **incidents** (third week only), one leaf each: see ``KINDS``;
- **quiet keys** drawn apart (:mod:`.quiet_keys`, appended after everything above): three quiet features each
  storming sparsely once (``sparse_quiet_storm``: bursts of a few requests failing 3–6 attempts each, silent gaps
  of 5–15 min, for 30–90 min) and, as a negative control (``quiet_blip``), three quiet keys hit by a provider blip
  only they show: 1–3 requests failing 1–3 attempts each, then silence.

Everything is arrays of shape (leaves, minutes); subjects (``team=…``, ``feature=…``,
``customer=…``) are sums of leaves through ``membership``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from bench.detector_eval.traces import Trace

DAY = 1440
WEEK = 7 * DAY
DAYS = 21                      # two weeks of history, then the evaluated week
EVAL_START = 14 * DAY          # day 14 is a Monday (day 0 is)
PRICES = (0.2, 1.0, 1.5, 0.4)  # a model's price, relative (a mini, two frontier models, a flash model)
MEAN_REQUEST_USD = 0.05        # a request's mean cost at price 1: the trace gives the spread, this the level
PROVIDERS = ("openai", "anthropic", "google")
FAILED_ATTEMPT_SHARE = 0.25
SPEND_KINDS = ("spike", "model_switch", "night_abuse", "weekend_spike", "creep")
RETRY_KINDS = ("storm_busy", "storm_quiet", "slow_burn", "loop_fingerprint", "loop_attempts", "sparse_quiet_storm")
# (kind, how many per run)
KINDS = (("spike", 5), ("model_switch", 2), ("night_abuse", 2), ("weekend_spike", 2), ("creep", 2),
         ("new_key", 2), ("storm_busy", 3), ("storm_quiet", 3), ("slow_burn", 3), ("loop_fingerprint", 2),
         ("loop_attempts", 2))
CONTROLS = (("data", "nightly-batch", "internal-etl"), ("data", "weekday-report", "internal-reports"),
            ("support", "lunch-peak", "internal-lunch"))
# drawn from a generator of their own and appended last, so the worlds above stay what they were
BUSY_CONTROL = ("search", "busy-search", "internal-search")   # a busy key: its ordinary bursts only
MONTHLY_CONTROL = ("finance", "month-end-close", "internal-finance")  # a monthly job, seen once in history
MONTH_DAYS = 17   # "a month" in a three-week world: the job ran on day 1 and runs again on day 18 (a Friday)
MONTHLY_RUNS = (1 * DAY + 22 * 60, (1 + MONTH_DAYS) * DAY + 22 * 60)  # 22:00 both times
EXTRA_CONTROLS = (BUSY_CONTROL, MONTHLY_CONTROL)
# quiet keys (:mod:`.quiet_keys`), drawn from a generator of their own and appended after the extra controls: each
# storms sparsely once (an incident, not in ``KINDS``: those are drawn from the world's generator), or is blipped
SPARSE_STORM_KEYS = tuple(("team-quiet", f"sparse-{k}", f"cust-sparse-{k}") for k in range(3))
QUIET_BLIP_CONTROLS = tuple(("ops", f"blip-{k}", f"internal-blip-{k}") for k in range(3))


def pair_subject(feature: str, customer: str) -> str:
    """A feature × customer subject, named as ``spendstream.detect.baseline`` names it."""
    return f"feature={feature},customer={customer}"


def model_subject(feature: str, customer: str, model: str) -> str:
    """A feature × customer × model subject (a leaf of a pair), named as ``spendstream.detect.baseline`` names it."""
    return f"feature={feature},customer={customer},model={model}"


@dataclass(frozen=True)
class Leaf:
    team: str
    feature: str
    customer: str
    provider: str
    model: str = ""  # which of ``PRICES`` it is served at ("model-<index>"); the extra controls have none


@dataclass
class Incident:
    kind: str
    leaf: int
    start: int                # minute index
    end: int                  # exclusive; for creep, the end of the run
    excess_usd: float = 0.0   # spend the incident added (or wasted), in total
    excess: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per minute from start
    leaves: tuple[int, ...] = ()  # every leaf it touches (a creep: the customer's, a slow burn: the feature's)


@dataclass
class World:
    shape: str
    seed: int
    leaves: list[Leaf]
    requests: np.ndarray      # successful + failed logical requests, per minute
    attempts: np.ndarray
    failed: np.ndarray        # failed attempts
    cost: np.ndarray          # USD, all attempts
    failed_cost: np.ndarray   # USD of failed attempts
    max_attempt: np.ndarray   # highest attempt number seen in the minute
    repeats: np.ndarray       # requests of one repeated shape (same prompt fingerprint and size) in the minute
    incidents: list[Incident]
    subjects: list[str] = field(default_factory=list)
    membership: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (subjects, leaves), 0/1
    controls: set[str] = field(default_factory=set)
    control_kinds: dict[str, str] = field(default_factory=dict)  # control subject -> which control (its feature, or
    #                                                              "quiet_blip" for every quiet blip key's)
    blips: list[Incident] = field(default_factory=list)  # the quiet blips (a control: not in ``incidents``)

    @property
    def minutes(self) -> int:
        return self.requests.shape[1]

    def subject_sum(self, array: np.ndarray) -> np.ndarray:
        return self.membership @ array

    def leaf_subjects(self, leaf: int) -> set[str]:
        """Its team, feature and customer, its feature × customer and its feature × customer × model (subjects only
        the spend detector keeps)."""
        me = self.leaves[leaf]
        return ({self.subjects[s] for s in np.flatnonzero(self.membership[:, leaf])}
                | {pair_subject(me.feature, me.customer), model_subject(me.feature, me.customer, me.model)})

    def pairs(self) -> tuple[list[str], np.ndarray]:
        """The feature × customer subjects and their (pairs, leaves) membership: not in ``subjects``, so the
        rules that do not keep them and the per-key rates (over team, feature and customer keys) are unchanged."""
        names = sorted({pair_subject(leaf.feature, leaf.customer) for leaf in self.leaves})
        index = {name: i for i, name in enumerate(names)}
        membership = np.zeros((len(names), len(self.leaves)), dtype=np.float32)
        for j, leaf in enumerate(self.leaves):
            membership[index[pair_subject(leaf.feature, leaf.customer)], j] = 1.0
        return names, membership

    def models(self) -> tuple[list[str], np.ndarray]:
        """The feature × customer × model subjects of the pairs served by two models or more, and their (subjects,
        leaves) membership: as ``spendstream.detect.subject_hours.read`` keeps them (a pair's only model is the pair
        itself). Leaves of one pair at one price are one model: one subject."""
        served: dict[str, set[str]] = {}
        for leaf in self.leaves:
            if leaf.model:
                served.setdefault(pair_subject(leaf.feature, leaf.customer), set()).add(leaf.model)
        names = sorted({model_subject(leaf.feature, leaf.customer, leaf.model) for leaf in self.leaves
                        if len(served.get(pair_subject(leaf.feature, leaf.customer), ())) >= 2})
        index = {name: i for i, name in enumerate(names)}
        membership = np.zeros((len(names), len(self.leaves)), dtype=np.float32)
        for j, leaf in enumerate(self.leaves):
            i = index.get(model_subject(leaf.feature, leaf.customer, leaf.model))
            if i is not None:
                membership[i, j] = 1.0
        return names, membership

    def incident_subjects(self, incident: Incident) -> set[str]:
        return set().union(*(self.leaf_subjects(leaf) for leaf in incident.leaves or (incident.leaf,)))


def generate(trace: Trace, seed: int, *, days: int = DAYS, leaves: int = 250, peak_rate: float = 300.0) -> World:
    rng = np.random.default_rng(seed)
    n_new = dict(KINDS)["new_key"]
    total = leaves + len(CONTROLS) + n_new
    minutes = days * DAY
    features = [f"feat-{i:02d}" for i in range(60)]
    zipf = lambda n: (w := 1 / np.arange(1, n + 1)) / w.sum()  # noqa: E731
    fi = rng.choice(len(features), size=leaves, p=zipf(len(features)))
    ci = rng.choice(200, size=leaves, p=zipf(200))
    made = [Leaf(f"team-{f % 10}", features[f], f"cust-{c:03d}", PROVIDERS[f % 3]) for f, c in zip(fi, ci, strict=True)]
    made += [Leaf(t, f, c, "openai") for t, f, c in CONTROLS]
    made += [Leaf(f"team-{k}", features[k], f"cust-new-{k}", "openai") for k in range(n_new)]
    rate = np.concatenate([peak_rate / np.arange(1, leaves + 1) ** 1.1, np.zeros(len(CONTROLS) + n_new)])
    peak = rng.integers(9, 17, size=total)
    weekend = rng.uniform(0.3, 0.8, size=total)
    model = rng.integers(0, len(PRICES), size=total)
    price = np.array([PRICES[i] for i in model])
    made = [replace(leaf, model=f"model-{m}") for leaf, m in zip(made, model, strict=True)]
    p_fail = rng.uniform(0.015, 0.022, size=total)
    tokens = trace.input_tokens + 4 * trace.output_tokens  # output tokens cost ~4x input ones
    unit = tokens / tokens.mean() * MEAN_REQUEST_USD
    mean_cost, var_cost = price * unit.mean(), price ** 2 * unit.var()

    t = np.arange(minutes)
    hour, minute_of_hour, hod, dow = t // 60, t % 60, (t // 60) % 24, (t // DAY) % 7
    daily = 0.25 + 0.75 * np.exp(-(((hod[None, :] - peak[:, None]) / 4.5) ** 2))
    profile = daily * np.where(dow[None, :] >= 5, weekend[:, None], 1.0)
    phase = rng.integers(0, len(trace.per_minute), size=(total, days * 24))
    bursts = trace.per_minute[(phase[:, hour] + minute_of_hour[None, :]) % len(trace.per_minute)]
    lam = rate[:, None] * profile * bursts
    _controls(lam, leaves, rng, dow, hod, minute_of_hour, days)
    fail_p = np.repeat(p_fail[:, None], minutes, axis=1)
    providers = np.array([PROVIDERS.index(leaf.provider) for leaf in made])
    for day in range(days):  # provider blips: normal life
        for _ in range(4):
            at, length, which = day * DAY + rng.integers(0, DAY - 5), rng.integers(2, 5), rng.integers(0, 3)
            fail_p[providers == which, at:at + length] = 0.35
    world = World(trace.name, seed, made, *(np.zeros((total, minutes), dtype=np.float32) for _ in range(7)),
                  incidents=[])
    cost_scale = np.ones((total, minutes), dtype=np.float32)
    extra_lam = np.zeros((total, minutes), dtype=np.float32)
    quiet_attempts = np.zeros((total, minutes), dtype=np.float32)
    usual = lam.copy()
    incidents = _incidents(rng, leaves, rate, lam, fail_p, cost_scale, extra_lam, quiet_attempts, world, hod, dow,
                           mean_cost)
    lam += extra_lam
    requests = rng.poisson(lam).astype(np.float32)
    failed = rng.binomial(requests.astype(np.int64), fail_p.clip(0, 1)).astype(np.float32) + quiet_attempts
    per_request = mean_cost[:, None] * cost_scale
    shape_k = np.where(requests > 0, requests * mean_cost[:, None] ** 2 / var_cost[:, None], 1.0)
    cost = np.where(requests > 0, rng.gamma(shape_k, var_cost[:, None] / mean_cost[:, None]), 0.0) * cost_scale
    world.requests, world.failed = requests, failed
    world.attempts = requests + failed
    world.failed_cost = (failed * per_request * FAILED_ATTEMPT_SHARE).astype(np.float32)
    world.cost = (cost + world.failed_cost + world.repeats * per_request).astype(np.float32)
    world.max_attempt = np.maximum(world.max_attempt, np.where(failed > 0, 2, np.where(requests > 0, 1, 0)))
    world.attempts += world.repeats
    world.requests += world.repeats
    for incident in incidents:  # what each incident added, per minute (for dollars before the first alert)
        incident.excess = _excess(world, incident, lam - usual, mean_cost, p_fail)
        incident.excess_usd = float(incident.excess.sum())
    world.incidents = incidents
    from bench.detector_eval import quiet_keys  # it builds on this module's types: imported once they exist

    def profile_of(peak_hour: int, weekend_share: float) -> np.ndarray:  # a key's daily and weekly curve
        return (0.25 + 0.75 * np.exp(-(((hod - peak_hour) / 4.5) ** 2))) * np.where(dow >= 5, weekend_share, 1.0)

    _extra_controls(world, trace, seed, profile_of=profile_of, hour=hour, minute_of_hour=minute_of_hour, tokens=tokens)
    quiet_keys.append(world, trace, seed, profile_of=profile_of, hour=hour, minute_of_hour=minute_of_hour,
                      tokens=tokens)
    _subjects(world)
    return world


def _extra_controls(world: World, trace: Trace, seed: int, *, profile_of, hour: np.ndarray,
                    minute_of_hour: np.ndarray, tokens: np.ndarray) -> None:
    """Two more negative controls, as rows appended to every array: a busy key (its own bursts, nothing more)
    and a month-end job seen once before (``MONTHLY_RUNS``; nothing else ever)."""
    rng = np.random.default_rng([seed, 18])
    minutes = world.minutes
    days = minutes // DAY
    phase = rng.integers(0, len(trace.per_minute), size=days * 24)
    busy = 60.0 * profile_of(int(rng.integers(9, 17)), float(rng.uniform(0.3, 0.8))) * trace.per_minute[
        (phase[hour] + minute_of_hour) % len(trace.per_minute)]
    monthly = np.zeros(minutes)
    for at in MONTHLY_RUNS:
        monthly[at:at + 10] = 40.0
    lam = np.stack([busy, monthly])
    unit = tokens / tokens.mean() * MEAN_REQUEST_USD
    mean_cost, var_cost = unit.mean(), unit.var()
    requests = rng.poisson(lam).astype(np.float32)
    failed = rng.binomial(requests.astype(np.int64), 0.018).astype(np.float32)
    shape_k = np.where(requests > 0, requests * mean_cost ** 2 / var_cost, 1.0)
    failed_cost = (failed * mean_cost * FAILED_ATTEMPT_SHARE).astype(np.float32)
    cost = np.where(requests > 0, rng.gamma(shape_k, var_cost / mean_cost), 0.0) + failed_cost
    zeros = np.zeros((2, minutes), dtype=np.float32)
    rows = {"requests": requests, "failed": failed, "attempts": requests + failed, "cost": cost.astype(np.float32),
            "failed_cost": failed_cost, "max_attempt": np.where(failed > 0, 2, np.where(requests > 0, 1, 0)),
            "repeats": zeros}
    for name, extra in rows.items():
        setattr(world, name, np.concatenate([getattr(world, name), extra.astype(np.float32)]))
    world.leaves += [Leaf(t, f, c, "openai") for t, f, c in EXTRA_CONTROLS]


def _controls(lam: np.ndarray, leaves: int, rng: np.random.Generator, dow: np.ndarray, hod: np.ndarray,
              minute_of_hour: np.ndarray, days: int) -> None:
    nightly, weekday, lunch = leaves, leaves + 1, leaves + 2
    for day in range(days):
        at = day * DAY + 2 * 60 + int(rng.integers(-5, 6))
        lam[nightly, at:at + int(rng.integers(8, 13))] = 60.0
        if day % 7 < 5:
            at = day * DAY + 9 * 60 + int(rng.integers(-5, 6))
            lam[weekday, at:at + int(rng.integers(8, 13))] = 40.0
    lam[lunch] = np.where((dow < 5) & (hod == 12), 16.0, 2.0)


def _incidents(rng, leaves, rate, lam, fail_p, cost_scale, extra_lam, quiet_attempts, world, hod, dow,
               mean_cost) -> list[Incident]:
    used: set[int] = set()
    out: list[Incident] = []
    busy, quiet = np.arange(0, 30), np.arange(leaves - 60, leaves)
    # creeps and slow burns touch a whole customer or feature: ones neither tiny nor the very largest
    mid_customers = _sized(world, rate, leaves, "customer", 2.0, 30.0)
    mid_features = _sized(world, rate, leaves, "feature", 5.0, 60.0)
    new_leaves = iter(range(leaves + len(CONTROLS), lam.shape[0]))
    end_of_run = lam.shape[1]

    def pick(pool: np.ndarray) -> int:
        choice = int(rng.choice([p for p in pool if p not in used]))
        used.add(choice)
        return choice

    def when(length: int, *, hours: tuple[int, int] = (0, 24), weekend: bool | None = None) -> int:
        while True:
            start = EVAL_START + int(rng.integers(0, 7 * DAY - length - 60))
            if hours[0] <= hod[start] < hours[1] and (weekend is None or (dow[start] >= 5) == weekend):
                return start

    for kind, count in KINDS:
        for _ in range(count):
            if kind == "spike":
                leaf, length = pick(np.arange(leaves // 2)), int(rng.integers(30, 91))
                start = when(length)
                lam[leaf, start:start + length] *= rng.uniform(4, 8)
            elif kind == "model_switch":
                leaf, length = pick(np.arange(leaves // 2)), int(rng.integers(120, 361))
                start = when(length)
                cost_scale[leaf, start:start + length] = 4.0
            elif kind == "night_abuse":
                leaf, length = pick(np.arange(leaves)), int(rng.integers(60, 121))
                start = when(length, hours=(1, 4), weekend=False)
                extra_lam[leaf, start:start + length] = 8 * max(rate[leaf], 0.5)
            elif kind == "weekend_spike":
                leaf, length = pick(np.arange(leaves // 2)), int(rng.integers(60, 181))
                start = when(length, hours=(8, 20), weekend=True)
                lam[leaf, start:start + length] *= 5
            elif kind == "creep":  # a customer's use grows, on every feature it uses
                leaf, start, length = pick(mid_customers), EVAL_START, end_of_run - EVAL_START
                for other in _same(world, leaf, "customer"):
                    lam[other, start:] *= 1.15 ** (np.arange(length) / DAY)
            elif kind == "new_key":
                leaf, length = next(new_leaves), int(rng.integers(DAY, 2 * DAY))
                start = when(length)
                length = end_of_run - start
                lam[leaf, start:] = 50.0 / 1440 / mean_cost[leaf]  # ~$50 a day from its first minute
            elif kind == "storm_busy":
                leaf, length = pick(busy), int(rng.integers(15, 46))
                start = when(length)
                fail_p[leaf, start:start + length] = 0.4
            elif kind == "storm_quiet":
                leaf, length = pick(quiet), int(rng.integers(30, 61))
                start = when(length)
                extra_lam[leaf, start:start + length] = np.maximum(extra_lam[leaf, start:start + length], 0.6)
                quiet_attempts[leaf, start:start + length] = rng.poisson(0.6 * 4, size=length)
                world.max_attempt[leaf, start:start + length] = 5
            elif kind == "slow_burn":  # a feature's failure ratio doubles (a degraded deployment), for 3 h
                leaf, length = pick(mid_features), 180
                start = when(length)
                for other in _same(world, leaf, "feature"):
                    fail_p[other, start:start + length] *= 2
            elif kind == "loop_fingerprint":
                leaf, length = pick(np.arange(leaves)), int(rng.integers(20, 61))
                start = when(length)
                world.repeats[leaf, start:start + length] = rng.integers(3, 9)
            else:  # loop_attempts: one request id, attempt after attempt
                leaf, length = pick(np.arange(leaves)), int(rng.integers(5, 16))
                start = when(length)
                n = int(rng.integers(10, 41))
                per = np.bincount(rng.integers(0, length, size=n), minlength=length)
                quiet_attempts[leaf, start:start + length] += per
                world.max_attempt[leaf, start:start + length] = np.minimum(np.cumsum(per) + 1, 255)
            touched = tuple(_same(world, leaf, {"creep": "customer", "slow_burn": "feature"}[kind])) if kind in (
                "creep", "slow_burn") else (leaf,)
            out.append(Incident(kind, leaf, start, min(start + length, end_of_run), leaves=touched))
    return out


def _sized(world: World, rate: np.ndarray, leaves: int, key: str, low: float, high: float) -> np.ndarray:
    """Leaves whose customer (or feature) peaks at between ``low`` and ``high`` requests a minute in all."""
    totals: dict[str, float] = {}
    for i in range(leaves):
        totals[getattr(world.leaves[i], key)] = totals.get(getattr(world.leaves[i], key), 0.0) + rate[i]
    return np.array([i for i in range(leaves) if low <= totals[getattr(world.leaves[i], key)] <= high])


def _same(world: World, leaf: int, key: str) -> list[int]:
    """The leaves that share ``leaf``'s customer (or feature), itself included."""
    value = getattr(world.leaves[leaf], key)
    return [i for i, other in enumerate(world.leaves) if getattr(other, key) == value]


def _excess(world: World, incident: Incident, added: np.ndarray, mean_cost: np.ndarray, p_fail: np.ndarray
            ) -> np.ndarray:
    """What the incident cost beyond normal life, per minute (volume: expected, not sampled)."""
    span = slice(incident.start, incident.end)
    if len(incident.leaves) > 1:
        return sum(_excess(world, replace(incident, leaf=leaf, leaves=(leaf,)), added, mean_cost, p_fail)
                   for leaf in incident.leaves)
    leaf = incident.leaf
    if incident.kind in ("storm_busy", "storm_quiet", "slow_burn", "loop_attempts"):
        usual = world.requests[leaf, span] * p_fail[leaf] * mean_cost[leaf] * FAILED_ATTEMPT_SHARE
        return np.maximum(world.failed_cost[leaf, span] - usual, 0.0)
    if incident.kind == "loop_fingerprint":
        return world.repeats[leaf, span] * mean_cost[leaf]
    if incident.kind == "model_switch":
        return world.cost[leaf, span] * 0.75
    return np.maximum(added[leaf, span], 0.0) * mean_cost[leaf]  # spikes, abuse, creep, new keys


def _subjects(world: World) -> None:
    names = sorted({f"{k}={getattr(leaf, k)}" for leaf in world.leaves for k in ("team", "feature", "customer")})
    index = {name: i for i, name in enumerate(names)}
    membership = np.zeros((len(names), len(world.leaves)), dtype=np.float32)
    for j, leaf in enumerate(world.leaves):
        for k in ("team", "feature", "customer"):
            membership[index[f"{k}={getattr(leaf, k)}"], j] = 1.0
    world.subjects, world.membership = names, membership
    every = CONTROLS + EXTRA_CONTROLS + QUIET_BLIP_CONTROLS
    for t, f, c in every:
        kind = "quiet_blip" if (t, f, c) in QUIET_BLIP_CONTROLS else f
        world.control_kinds |= {f"{k}={v}": kind for k, v in (("team", t), ("feature", f), ("customer", c))}
        world.control_kinds[pair_subject(f, c)] = kind
    for leaf in world.leaves:
        kind = world.control_kinds.get(pair_subject(leaf.feature, leaf.customer))
        if kind is not None:
            world.control_kinds[model_subject(leaf.feature, leaf.customer, leaf.model)] = kind
    world.controls = set(world.control_kinds)
