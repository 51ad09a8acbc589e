"""What the retry-storm rule's false alarms are: per delivered false trigger, which test fired and in what context.

    PYTHONPATH=. .venv/bin/python -m bench.detector_eval.storm_false --seeds 1 2 3 4 5

The same worlds and rules as ``--rules noise --families retries`` (the score line is the harness's). For every
delivered trigger that :func:`.score.true_incident` finds no incident for: the subject's kind (feature,
customer, pair) and size (attempts a minute over its two weeks of history), the test that made it hot at that
pass (the fast window's storm, the slow window's burn, a loop), its fast and slow windows' failed and attempted
attempts against the ratio it was held to, whether a provider blip fell in either window (a minute whose
provider failed at ``BLIP_RATIO`` or more over all its traffic) and whether an injected incident of any kind
touched the subject before, during or within ``AFTER`` minutes after its end.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from bench.detector_eval import rules_noise, score
from bench.detector_eval.traces import SHAPES, load
from bench.detector_eval.traffic import EVAL_START, PROVIDERS, World, generate
from spendstream.detect.storm import RetryStormRule, StormVerdict, _z

BLIP_RATIO = 0.15  # blips fail a third of a provider's attempts; its usual is ~2 %, a busy storm moves it a few %
AFTER = 360


@dataclass(frozen=True)
class _Recording(RetryStormRule):
    """The package's rule, keeping what each pass's tests said (diagnostics only)."""

    seen: list = field(default_factory=list, compare=False)

    def judge(self, **kw) -> StormVerdict:
        verdict = super().judge(**kw)
        f, a = kw["failed"].sum(axis=1), kw["attempts"].sum(axis=1)
        sf, sa = kw["slow_failed"].sum(axis=1), kw["slow_attempts"].sum(axis=1)
        p = verdict.expected_ratio
        ratio = np.where(a > 0, f / np.maximum(a, 1), 0.0)
        storm = (verdict.z >= self.z_fire) & (f >= self.min_failed) & (ratio >= self.factor * p)
        loop = self.looping(kw["max_attempt"], kw["repeats"], kw.get("slow_repeats"))
        p_slow = self.expected_ratio(kw["own_ratio"], failed=kw["slow_failed"], attempts=kw["slow_attempts"],
                                     counted=kw.get("counted"), others=kw.get("slow_others"))
        self.seen.append({"f": f, "a": a, "sf": sf, "sa": sa, "p": p, "p_slow": p_slow, "own": kw["own_ratio"],
                          "z_slow": _z(sf, sa, p_slow), "storm": storm, "loop": loop,
                          "burn": verdict.hot & ~storm & ~loop})
        return verdict


def _blips(world: World) -> np.ndarray:
    """(providers, minutes): whether the provider's traffic failed at ``BLIP_RATIO`` or more that minute."""
    out = np.zeros((len(PROVIDERS), world.minutes), dtype=bool)
    for k, provider in enumerate(PROVIDERS):
        rows = [i for i, leaf in enumerate(world.leaves) if leaf.provider == provider]
        a, f = world.attempts[rows].sum(axis=0), world.failed[rows].sum(axis=0)
        out[k] = (a > 0) & (f >= BLIP_RATIO * np.maximum(a, 1))
    return out


def classify(world: World, rule: RetryStormRule | None = None, *, by_minute: bool = True
             ) -> tuple[score.Score, list[dict]]:
    """The harness's score for ``rule`` (the package's default) and one record per delivered false trigger;
    ``by_minute``: as :func:`.rules_noise.retries`."""
    rule = _Recording(**{k: getattr(rule or RetryStormRule(), k) for k in RetryStormRule.__dataclass_fields__})
    fired = rules_noise.retries(world, rule, by_minute=by_minute)
    result = score.score(world, fired, "noise", "retries")
    result.true_by = []  # (incident kind, test, subject kind) per delivered true trigger
    rows = [s for s in world.subjects if not s.startswith("team=")] + world.pairs()[0]  # as rules_noise.retries
    index = {s: i for i, s in enumerate(rows)}
    pass_of = {t: k for k, t in enumerate(rules_noise.passes(world))}
    membership = np.concatenate([world.membership[[i for i, s in enumerate(world.subjects)
                                                   if not s.startswith("team=")]], world.pairs()[1]])
    history = (membership @ world.attempts[:, :EVAL_START].sum(axis=1)) / EVAL_START
    blips = _blips(world)
    out = []
    for f in fired:
        if f.state != "firing" or f.part_of:
            continue
        i, seen = index[f.subject], rule.seen[pass_of[f.minute]]
        test = "loop" if seen["loop"][i] else "storm" if seen["storm"][i] else "burn"
        true = score.true_incident(world, f)
        if true is not None:
            result.true_by.append((true.kind, test, "pair" if "," in f.subject else f.subject.split("=")[0]))
            continue
        leaves = np.flatnonzero(membership[i])
        providers = sorted({PROVIDERS.index(world.leaves[j].provider) for j in leaves})
        in_fast = bool(blips[providers, f.minute - rule.window_minutes:f.minute].any())
        in_slow = bool(blips[providers, f.minute - rule.slow_minutes:f.minute].any())
        context = []
        for incident in world.incidents:
            if f.subject not in world.incident_subjects(incident) and not any(
                    f.subject in world.leaf_subjects(j) for j in incident.leaves or (incident.leaf,)):
                continue
            if incident.start <= f.minute <= incident.end:
                context.append(f"during {incident.kind}")
            elif incident.end < f.minute <= incident.end + AFTER:
                context.append(f"{f.minute - incident.end} min after {incident.kind}")
        kind = "pair" if "," in f.subject else f.subject.split("=")[0]
        size = history[i]
        out.append({"world": f"{world.shape} {world.seed}", "minute": f.minute, "subject": f.subject, "kind": kind,
                    "size": "quiet (<1/min)" if size < 1 else "mid (1-10/min)" if size < 10 else "busy (>=10/min)",
                    "per_min": size, "test": test, "blip": "fast" if in_fast else "slow" if in_slow else "none",
                    "context": "; ".join(context) or "none", "f": seen["f"][i], "a": seen["a"][i], "p": seen["p"][i],
                    "sf": seen["sf"][i], "sa": seen["sa"][i], "p_slow": seen["p_slow"][i], "own": seen["own"][i],
                    "z_slow": seen["z_slow"][i]})
    return result, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--window-average", action="store_true",
                        help="also judge each world with the fast window's average as others (before s14), paired")
    args = parser.parse_args()
    merged, records, true_by, before = None, [], [], None
    traces = {shape: load(shape) for shape in args.shapes}
    for seed in args.seeds:  # seeds outer: a run stopped early still holds every shape
        for shape in args.shapes:
            world = generate(traces[shape], seed)
            if args.window_average:
                old, _ = classify(world, by_minute=False)
                before = before.merge(old) if before else old
                print(f"# {shape} {seed} window average: {old.detected}/{old.incidents} found, "
                      f"{old.true_alerts}/{old.alerts} true", flush=True)
            result, found = classify(world)
            print(f"# {shape} {seed} minutes: {result.detected}/{result.incidents} found, "
                  f"{result.true_alerts}/{result.alerts} true", flush=True)
            true_by += result.true_by
            merged = merged.merge(result) if merged else result
            records += found
            for r in found:
                print(f"{r['world']} m{r['minute']} {r['subject']} [{r['kind']}, {r['size']} {r['per_min']:.1f}/min] "
                      f"{r['test']}: fast {r['f']:.0f}/{r['a']:.0f} held {r['p']:.2%}, slow {r['sf']:.0f}/{r['sa']:.0f}"
                      f" held {r['p_slow']:.2%} (own {r['own']:.2%}, z {r['z_slow']:.1f}); blip {r['blip']}; "
                      f"{r['context']}", flush=True)
    if before is not None:
        print(f"\nwindow average (paired): recall {before.recall:.2f} ({before.detected}/{before.incidents}), "
              f"precision {before.precision:.2f} ({before.true_alerts}/{before.alerts}), false alarms/day/100 keys "
              f"{before.false_per_day_per_100:.2f}; missed: {Counter(m.split('@')[0] for m in before.missed)}")
    print(f"\nrecall {merged.recall:.2f} ({merged.detected}/{merged.incidents}), precision {merged.precision:.2f} "
          f"({merged.true_alerts}/{merged.alerts}), false alarms/day/100 keys {merged.false_per_day_per_100:.2f}, "
          f"negative-control alerts {merged.control_alerts}; missed: "
          f"{Counter(m.split('@')[0] for m in merged.missed).most_common()}")
    for key in ("test", "kind", "size", "blip"):
        print(f"false triggers by {key}: {Counter(r[key] for r in records).most_common()}")
    after = Counter(("after " + r["context"].split(" after ")[1].split(";")[0]) if " after " in r["context"]
                    else "during an incident" if "during" in r["context"] else "none" for r in records)
    print(f"false triggers by incident context: {after.most_common()}")
    print(f"by test x kind: {Counter((r['test'], r['kind']) for r in records).most_common()}")
    print(f"true triggers by incident, test, subject: {sorted(Counter(true_by).items())}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
