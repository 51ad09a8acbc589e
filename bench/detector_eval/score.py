"""Scores: recall, precision, false alarms, delays, dollars before the first alert, messages per destination.

Only delivered alerts are scored: one stored as part of another subject's incident
(``Fired.part_of``) is counted apart (``attached``). An alert is *true* when it fires on a
subject of an incident's leaf (its team, feature or customer) between the incident's start
and ``GRACE`` minutes after its end; anything else
it fires on is a false alarm, and one on a negative control is counted apart as well.
Recall of a family (spend or retries) counts that family's incidents with a true alert of
that family's rules; spend recall is over incidents whose excess spend clears ``FLOOR_USD``
(the floor exists so tiny keys do not page), and the ones under it are reported apart.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from bench.detector_eval.rules import Fired
from bench.detector_eval.traffic import DAY, EVAL_START, RETRY_KINDS, SPEND_KINDS, Incident, World

GRACE = 30
FLOOR_USD = 10.0
CREEP_WITHIN = 2 * DAY
FAMILIES = {"spend": SPEND_KINDS + ("new_key",), "retries": RETRY_KINDS}


@dataclass
class Score:
    rule: str
    family: str
    incidents: int = 0
    detected: int = 0
    under_floor: int = 0
    under_floor_detected: int = 0
    alerts: int = 0
    true_alerts: int = 0
    control_alerts: int = 0
    keys: int = 0
    days: float = 7.0
    delays: list[float] = field(default_factory=list)
    spike_delays: list[float] = field(default_factory=list)
    creep_delays: list[float] = field(default_factory=list)
    usd_before: list[float] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    refires_max: int = 0
    attached: int = 0   # triggers stored as part of another subject's incident: not delivered, not scored
    found: Counter = field(default_factory=Counter)   # kind -> incidents of it found (of those counted)
    counted: Counter = field(default_factory=Counter)  # kind -> incidents of it counted in recall
    kind_delays: dict[str, list[float]] = field(default_factory=dict)  # kind -> delays of those found
    control_by: Counter = field(default_factory=Counter)  # which control (``World.control_kinds``) -> its alerts
    blips: int = 0          # quiet blips (``World.blips``, a negative control) ...
    blips_alerted: int = 0  # ... and those with an alert on their key from the blip to ``GRACE`` after its silence

    @property
    def recall(self) -> float:
        return self.detected / self.incidents if self.incidents else float("nan")

    @property
    def precision(self) -> float:
        return self.true_alerts / self.alerts if self.alerts else float("nan")

    @property
    def false_per_day_per_100(self) -> float:
        return (self.alerts - self.true_alerts) / self.days / (self.keys / 100)

    def merge(self, other: Score) -> Score:
        out = Score(self.rule, self.family)
        for name in ("incidents", "detected", "under_floor", "under_floor_detected", "alerts", "true_alerts",
                     "control_alerts", "keys", "attached", "blips", "blips_alerted"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.days = self.days  # keys add up across runs, days stay a week: per-key rates stay comparable
        for name in ("delays", "spike_delays", "creep_delays", "usd_before", "missed"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.refires_max = max(self.refires_max, other.refires_max)
        for name in ("found", "counted", "control_by"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        out.kind_delays = {k: self.kind_delays.get(k, []) + other.kind_delays.get(k, [])
                           for k in self.kind_delays.keys() | other.kind_delays.keys()}
        return out


def _subjects_of(world: World, incident: Incident) -> set[str]:
    return world.incident_subjects(incident)


def true_incident(world: World, fired: Fired) -> Incident | None:
    """The injected incident ``fired`` is true for: one on its subject, in its time, of a kind its detector is
    meant to find. A retry storm is true only for a retry incident (a creeping customer's or a spike's extra
    traffic is no storm); a spend alert for any incident, as every kind adds dollars (a storm's billed
    attempts, a loop's repeated calls)."""
    kinds = FAMILIES["retries"] if fired.kind == "retry_storm" else None
    for incident in world.incidents:
        if kinds is not None and incident.kind not in kinds:
            continue
        if fired.subject in _subjects_of(world, incident) and incident.start < fired.minute <= incident.end + GRACE:
            return incident
    return None


def score(world: World, fired: list[Fired], rule: str, family: str) -> Score:
    # what is delivered: an alert stored as part of another subject's incident (detect/correlate.py) is neither a
    # false alarm nor a detection of its own; it is counted apart
    firings = [f for f in fired if f.state == "firing" and not f.part_of]
    result = Score(rule, family, keys=len(world.subjects), days=(world.minutes - EVAL_START) / DAY)
    result.attached = sum(f.state == "firing" and bool(f.part_of) for f in fired)
    result.alerts = len(firings)
    result.true_alerts = sum(true_incident(world, f) is not None for f in firings)
    result.control_alerts = sum(f.subject in world.controls for f in firings)
    result.control_by = Counter(world.control_kinds[f.subject] for f in firings if f.subject in world.controls)
    result.blips = len(world.blips)
    result.blips_alerted = sum(any(f.subject in world.incident_subjects(b) and b.start < f.minute <= b.end + GRACE
                                   for f in firings) for b in world.blips)
    per_subject = Counter(f.subject for f in firings)
    result.refires_max = max(per_subject.values(), default=0)
    for incident in (i for i in world.incidents if i.kind in FAMILIES[family]):
        subjects = _subjects_of(world, incident)
        horizon = incident.start + CREEP_WITHIN if incident.kind == "creep" else incident.end + GRACE
        hits = [f.minute for f in firings if f.subject in subjects and incident.start < f.minute <= horizon]
        eligible = family != "spend" or incident.excess_usd >= FLOOR_USD
        if not eligible:
            result.under_floor += 1
            result.under_floor_detected += bool(hits)
            continue
        result.incidents += 1
        result.counted[incident.kind] += 1
        result.found[incident.kind] += bool(hits)
        if not hits:
            result.missed.append(f"{incident.kind}@{world.leaves[incident.leaf].feature}"
                                 f"/{world.leaves[incident.leaf].customer} ${incident.excess_usd:.0f}")
            result.usd_before.append(incident.excess_usd)
            continue
        result.detected += 1
        delay = min(hits) - incident.start
        result.delays.append(delay)
        result.kind_delays.setdefault(incident.kind, []).append(delay)
        if incident.kind == "spike":
            result.spike_delays.append(delay)
        if incident.kind == "creep":
            result.creep_delays.append(delay)
        result.usd_before.append(float(incident.excess[:delay].sum()))
    return result


def messages_per_day(world: World, fired: list[Fired], routes: dict[str, str]) -> dict[str, float]:
    """Messages each destination got per day, as the shipped delivery sends them (``routes``: name -> how).

    ``all``: every alert, alerts of one kind and state due in one pass grouped into one message;
    ``oncall``: one event per alert whose *own* severity is at least ``error`` (the documented route).
    """
    days = (world.minutes - EVAL_START) / DAY
    out = {}
    for name, how in routes.items():
        if how == "all":
            out[name] = len({(f.minute, f.kind, f.state) for f in fired}) / days
        else:
            out[name] = sum(f.severity in ("error", "critical") for f in fired) / days
    return out


def unresolved_pages(fired: list[Fired]) -> int:
    """PagerDuty incidents opened (error or worse) whose resolve never reached the on-call route."""
    opened = defaultdict(int)
    for f in fired:
        if f.state == "firing" and f.severity in ("error", "critical"):
            opened[f.subject] += 1
        elif f.state == "resolved" and f.severity in ("error", "critical"):
            opened[f.subject] -= 1
    return sum(max(n, 0) for n in opened.values())


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")
