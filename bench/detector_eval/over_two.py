"""Which injected incidents got more than two on-call (or Slack) messages, and the delivered keys that made them.

    PYTHONPATH=. .venv/bin/python -m bench.detector_eval.over_two --seeds 111 112 113 114 115
    PYTHONPATH=. .venv/bin/python -m bench.detector_eval.over_two --dest slack --seeds 161 162

One block per incident over two at on-call (counted as :func:`.rules_noise.messages_per_incident` counts them:
a key's trigger once its severity is ``error`` or worse, then its resolve; with ``--dest slack``, as it counts
Slack's: every delivered trigger and its resolve): the world, the injected kind, its leaf's subjects and its
minutes, then every delivered key the incident owns, in order: kind, subject, first trigger (minute of the day,
severity), the minute it reached on-call and its resolve. Both families run, as the harness runs them, so a
loop's spend anomaly beside its storm shows. Diagnostics only; scores nothing.
"""

from __future__ import annotations

import argparse

from bench.detector_eval import rules_noise
from bench.detector_eval.score import true_incident
from bench.detector_eval.traces import SHAPES, load
from bench.detector_eval.traffic import DAY, World, generate


def _at(minute: int | None) -> str:
    return "–" if minute is None else f"d{minute // DAY} {minute % DAY // 60:02d}:{minute % 60:02d}"


def over_two(world: World, dest: str = "on-call") -> list[str]:
    """The blocks of one world's incidents with more than two messages at ``dest`` (``on-call`` or ``slack``)."""
    storms = rules_noise.retries(world)
    fired = rules_noise.spend(world, storms=storms) + storms
    fired.sort(key=lambda f: f.minute)
    keys: dict[int, dict[tuple, dict]] = {}
    owner: dict[tuple, int] = {}
    incidents = {}
    for f in fired:
        if f.part_of:
            continue
        k = (f.kind, f.subject, f.onset if f.onset >= 0 else f.minute)
        if f.state == "firing" and k not in owner:
            found = true_incident(world, f)
            if found is None:
                continue
            owner[k], incidents[id(found)] = id(found), found
            keys.setdefault(id(found), {})[k] = {"trigger": f.minute, "severity": f.severity, "paged": None,
                                                 "resolved": None}
        if k not in owner:
            continue
        entry = keys[owner[k]][k]
        if f.state in ("firing", "escalated") and f.severity in ("error", "critical") and entry["paged"] is None:
            entry["paged"] = f.minute
        elif f.state == "resolved":
            entry["resolved"] = f.minute
    out = []
    for incident_id, per in keys.items():
        sent = [(k, e) for k, e in per.items() if dest == "slack" or e["paged"] is not None]
        messages = sum(1 + (e["resolved"] is not None) for _, e in sent)
        if messages <= 2:
            continue
        incident = incidents[incident_id]
        leaf = world.leaves[incident.leaf]
        out.append(f"- {world.shape} seed {world.seed}: {incident.kind} on {leaf.team} / {leaf.feature} / "
                   f"{leaf.customer}, {_at(incident.start)} to {_at(incident.end)}: {messages} {dest} messages")
        for (kind, subject, _), e in sorted(per.items(), key=lambda kv: kv[1]["trigger"]):
            out.append(f"  - {kind} {subject}: trigger {_at(e['trigger'])} ({e['severity']}), on-call "
                       f"{_at(e['paged'])}, resolved {_at(e['resolved'])}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--dest", default="on-call", choices=("on-call", "slack"))
    args = parser.parse_args()
    for shape in args.shapes:
        trace = load(shape)
        for seed in args.seeds:
            lines = over_two(generate(trace, seed), args.dest)
            print("\n".join(lines) if lines else f"- {shape} seed {seed}: none over two at {args.dest}", flush=True)


if __name__ == "__main__":
    main()
