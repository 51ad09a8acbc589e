"""Why an injected incident got more than two messages at a destination, and how late its resolve came.

A diagnostic beside :func:`.rules_noise.messages_per_incident` (it counts the same messages, the same way, and
scores nothing). Every delivered dedup key of an incident past its first is put down to one cause:

- ``re-fire after resolve``: the same subject fired again after its own resolve (with the minutes between);
- ``detached part``: a subject stored as part of the incident's root outlived it and was delivered on its own;
- ``other subject, first still open`` / ``other subject, after the first resolved``: a subject of the same
  injected incident that the grouping (``detect/correlate.py``) did not attach to the one already delivered;
- an escalation is a second trigger under the *same* key: it never adds a key, and a destination that already
  had the trigger is not sent it again, so it shows only as ``escalations`` (keys whose trigger was re-sent).

The resolve delay of an incident at a destination is the minutes from the incident's true end to the last resolve
it was sent (negative: resolved before the incident was over, the usual sign of a flap).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bench.detector_eval.rules import Fired
from bench.detector_eval.score import true_incident
from bench.detector_eval.traffic import World

REFIRE_BUCKETS = (15, 30, 60, 120)  # minutes from a resolve to the same subject's next trigger


@dataclass
class Flaps:
    causes: Counter = field(default_factory=Counter)            # (destination, cause) -> extra keys
    refire_gaps: dict[str, list[int]] = field(default_factory=dict)   # destination -> minutes resolve -> re-fire
    resolve_delays: dict[str, list[int]] = field(default_factory=dict)  # destination -> minutes true end -> resolve
    unresolved: Counter = field(default_factory=Counter)        # destination -> incidents whose last key never resolved
    escalations: Counter = field(default_factory=Counter)       # destination -> keys whose trigger was sent again
    kinds: Counter = field(default_factory=Counter)             # (destination, injected kind, cause) -> extra keys

    def merge(self, other: Flaps) -> Flaps:
        out = Flaps(self.causes + other.causes, {}, {}, self.unresolved + other.unresolved,
                    self.escalations + other.escalations, self.kinds + other.kinds)
        for name in ("refire_gaps", "resolve_delays"):
            for src in (getattr(self, name), getattr(other, name)):
                for dest, values in src.items():
                    getattr(out, name).setdefault(dest, []).extend(values)
        return out


def _key(f: Fired) -> tuple:
    return f.kind, f.subject, f.onset if f.onset >= 0 else f.minute


def flaps(world: World, fired: list[Fired]) -> Flaps:
    """The causes of every message over two per incident and destination, and each incident's resolve delay."""
    attached = {(f.kind, f.subject, f.onset) for f in fired if f.part_of and f.state == "firing"}
    delivered = [f for f in fired if not f.part_of]
    owner: dict[tuple, object] = {}
    incident_of: dict[int, object] = {}
    paged: set[tuple] = set()
    # destination -> incident id -> [(key, trigger minute, resolve minute or None)], in the order they opened
    keys: dict[str, dict[int, list[list]]] = {"slack": {}, "on-call": {}}
    out = Flaps()

    def opened(dest: str, incident: int, k: tuple, minute: int) -> None:
        keys[dest].setdefault(incident, []).append([k, minute, None])

    def resolved(dest: str, incident: int, k: tuple, minute: int) -> None:
        for entry in keys[dest].get(incident, []):
            if entry[0] == k:
                entry[2] = minute

    for f in delivered:
        k = _key(f)
        if f.state == "firing":
            found = true_incident(world, f)
            if found is None:
                continue
            owner[k], incident_of[id(found)] = id(found), found
            opened("slack", id(found), k, f.minute)
        if k not in owner:
            continue
        if f.state in ("firing", "escalated") and f.severity in ("error", "critical"):
            if k not in paged:
                paged.add(k)
                opened("on-call", owner[k], k, f.minute)
            elif f.state == "escalated":
                out.escalations["on-call"] += 1
        elif f.state == "escalated":
            out.escalations["slack"] += 1
        elif f.state == "resolved":
            resolved("slack", owner[k], k, f.minute)
            if k in paged:
                resolved("on-call", owner[k], k, f.minute)
    for dest, per in keys.items():
        for incident, entries in per.items():
            last = entries[-1][2] if all(e[2] is not None for e in entries) else None
            if last is None:
                out.unresolved[dest] += 1
            else:
                out.resolve_delays.setdefault(dest, []).append(max(e[2] for e in entries) - incident_of[incident].end)
            if sum(1 + (e[2] is not None) for e in entries) <= 2:
                continue
            for i, (k, minute, _) in enumerate(entries[1:], start=1):
                earlier = entries[:i]
                same = [e for e in earlier if e[0][1] == k[1] and e[2] is not None and e[2] <= minute]
                if same:
                    gap = minute - max(e[2] for e in same)
                    out.refire_gaps.setdefault(dest, []).append(gap)
                    cause = f"re-fire after resolve ≤ {_bucket(gap)} min" if gap <= REFIRE_BUCKETS[-1] else \
                        f"re-fire after resolve > {REFIRE_BUCKETS[-1]} min"
                elif (k[0], k[1], k[2]) in attached:
                    cause = "detached part"
                elif any(e[2] is None or e[2] > minute for e in earlier):
                    cause = "other subject, first still open"
                else:
                    cause = "other subject, after the first resolved"
                out.causes[(dest, cause)] += 1
                out.kinds[(dest, incident_of[incident].kind, cause.split(" ≤")[0].split(" >")[0])] += 1
    return out


def _bucket(gap: int) -> int:
    return next(b for b in REFIRE_BUCKETS if gap <= b)


def lines(name: str, result: Flaps) -> list[str]:
    """Markdown list items: the causes per destination, the re-fire gaps and the resolve delays."""
    import numpy as np

    out = []
    for dest in ("slack", "on-call"):
        causes = sorted(((c, n) for (d, c), n in result.causes.items() if d == dest), key=lambda x: -x[1])
        gaps = result.refire_gaps.get(dest, [])
        text = ", ".join(f"{c} {n}" for c, n in causes) or "none"
        if gaps:
            text += f" (re-fire gap p50 {np.percentile(gaps, 50):.0f} min, max {max(gaps)})"
        out.append(f"- {name}: keys past an incident's first, where it got > 2 messages, at {dest}: {text}; "
                   f"escalated triggers re-sent: {result.escalations[dest]}")
        kinds = sorted(((k, c, n) for (d, k, c), n in result.kinds.items() if d == dest), key=lambda x: -x[2])
        if kinds:
            out.append(f"  - by injected kind: {', '.join(f'{k} ({c}) {n}' for k, c, n in kinds)}")
        delays = result.resolve_delays.get(dest, [])
        if delays:
            out.append(f"- {name}: resolve delay at {dest} (min from the incident's true end to its last resolve): "
                       f"p50 {np.percentile(delays, 50):.0f}, p90 {np.percentile(delays, 90):.0f}, "
                       f"max {max(delays)}; resolved before the end: {sum(d < 0 for d in delays)} of {len(delays)}; "
                       f"never resolved in the world: {result.unresolved[dest]}")
    return out
