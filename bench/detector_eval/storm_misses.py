"""Why the storm rule missed what it missed: per missed retry incident, each subject's closest pass.

    PYTHONPATH=. .venv/bin/python -m bench.detector_eval.storm_misses --seeds 6 --shapes conv --kinds storm_busy

The same worlds and rules as ``--rules noise --families retries``. For every incident of ``--kinds`` that no
alert caught in time (as :mod:`.score` counts it), and each subject that could have caught it (its feature and
customer): the pass inside the incident (and its grace) where the fast window came closest to a storm, with
the window's failed and attempted attempts, the subject's own usual ratio, the ratio it was held to and
its z, and which of the storm's terms (``z_fire``, ``min_failed``, ``factor``) held it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np

from bench.detector_eval import rules_noise, score
from bench.detector_eval.traces import SHAPES, load
from bench.detector_eval.traffic import DAY, RETRY_KINDS, World, generate
from spendstream.detect.storm import RetryStormRule, StormVerdict


@dataclass(frozen=True)
class _Recording(RetryStormRule):
    """The package's rule, keeping what each pass judged (diagnostics only)."""

    seen: list = field(default_factory=list, compare=False)

    def judge(self, **kw) -> StormVerdict:
        verdict = super().judge(**kw)
        self.seen.append((kw["failed"].sum(axis=1), kw["attempts"].sum(axis=1), kw["own_ratio"], verdict))
        return verdict


def diagnose(world: World, kinds: tuple[str, ...]) -> list[str]:
    rule = _Recording()
    fired = rules_noise.retries(world, rule)
    missed = set(score.score(world, fired, "noise", "retries").missed)
    rows = [s for s in world.subjects if not s.startswith("team=")] + world.pairs()[0]  # as rules_noise.retries
    index = {s: i for i, s in enumerate(rows)}
    minutes = list(rules_noise.passes(world))
    out = []
    for incident in world.incidents:
        if incident.kind not in kinds:
            continue
        leaf = world.leaves[incident.leaf]
        tag = next((m for m in missed if m.startswith(f"{incident.kind}@{leaf.feature}/{leaf.customer}")), None)
        if tag is None:
            continue
        out.append(f"{world.shape} seed {world.seed}: MISSED {tag}, {incident.end - incident.start} min from day "
                   f"{incident.start // DAY} {incident.start % DAY // 60:02d}:{incident.start % 60:02d}")
        for subject in sorted(world.incident_subjects(incident)):
            s = index.get(subject)
            if s is None:
                continue
            best, line = -np.inf, "never evaluated"
            for t, (f, a, own, v) in zip(minutes, rule.seen, strict=True):
                if not incident.start < t <= incident.end + score.GRACE:
                    continue
                p, ratio = v.expected_ratio[s], f[s] / max(a[s], 1)
                terms = {"z": v.z[s] / rule.z_fire, "min_failed": f[s] / rule.min_failed,
                         "factor": ratio / (rule.factor * p)}
                held = min(terms, key=terms.get)
                if terms[held] > best:
                    best = terms[held]
                    line = (f"at +{t - incident.start} min: {f[s]:.0f} failed of {a[s]:.0f} ({ratio:.1%}), own "
                            f"{own[s]:.1%}, held to {p:.1%}, z {v.z[s]:.1f}: held by {held} ({terms[held]:.2f}x)")
            out.append(f"    {subject}: {line}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--kinds", nargs="+", default=["storm_busy"], choices=RETRY_KINDS)
    args = parser.parse_args()
    for shape in args.shapes:
        trace = load(shape)
        for seed in args.seeds:
            for line in diagnose(generate(trace, seed), tuple(args.kinds)):
                print(line, flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
