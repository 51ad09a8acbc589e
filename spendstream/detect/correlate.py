"""One incident, one page: the spend subjects one cause lifts together become one incident, named after the most
specific of them.

The spend detector watches nested subjects: a team holds features; a feature × customer pair is
part of its feature and of its customer. One customer hammering one feature lifts all four, and each
has its own incident (:class:`~spendstream.detect.incidents.Hysteresis`). Every pass, after each
subject's state machine has stepped, :func:`correlate` groups the subjects that are open (pending or
firing):

- a subject is **explained** by its open child with the largest excess when that child's excess
  (dollars above expected, this pass) is at least ``share`` of its own: most of the parent's excess
  is the child's. Half is the line: above it, no other child can account for as much, so the child
  is the best single name for the parent's rise; under it, the parent has a rise of its own (a
  feature-wide spike whose pairs each hold a little: the feature is the root, its team attached);
- a pair is **held** by an open parent that no child explains (a customer
  abusing three features: no pair explains the customer, it is the root and the pairs join it);
- following those links from any subject ends at its group's root. The root's incident is
  delivered; every other member's incident is stored *attached* to it (``Incident.root``: the
  root's dedup key), its alerts kept in ``alerts`` with ``correlated_with`` and not delivered.

Each subject keeps its own state machine, so its resolve is exact. What has been delivered cannot
be taken back: a subject already paging on its own stays its own incident, and a group that forms
around it later is attached to it. A pending root whose group has a firing member fires now (the page
names the most specific subject, not the first to cross its line), at the worst severity of the members
it carries. An attached subject that is hot and explained by nobody open becomes its own incident then
(it outgrew or outlived its root) and is delivered; one that is only lingering (not hot, not yet calm)
stays attached until it resolves, silently.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from spendstream.detect.incidents import Incident, Transition, worse

SHARE = 0.5
PAIR_MARK = ",customer="  # as spendstream.detect.baseline names a feature × customer pair


@dataclass(frozen=True, slots=True)
class Step:
    """One subject's pass: its incident before and after the state machine stepped, the message that sends."""

    before: Incident | None
    after: Incident | None
    transition: Transition | None
    excess_usd: float  # above expected in this pass's window
    hot: bool


def parents(subject: str, teams: Mapping[str, Collection[str]]) -> list[str]:
    """The subjects that hold ``subject``: a pair's feature and customer, a feature's teams (``teams``)."""
    if PAIR_MARK in subject:
        feature, customer = subject.split(PAIR_MARK, 1)
        return [feature, f"customer={customer}"]
    if subject.startswith("feature="):
        return sorted(teams.get(subject, ()))
    return []


def _depth(subject: str) -> int:
    return 0 if PAIR_MARK in subject else 2 if subject.startswith("team=") else 1


def correlate(steps: Mapping[str, Step], teams: Mapping[str, Collection[str]], *, share: float = SHARE
              ) -> dict[str, Step]:
    """``steps`` with each open subject's incident attached to its group's root (or its own: ``root`` ""), and
    the transitions that grouping changes: a pending root fired by its group, a root escalated to its members'
    worst severity, an attached subject detached."""
    out = dict(steps)

    def delivered(s: str) -> bool:  # paging on its own already
        before = steps[s].before
        return before is not None and before.state == "firing" and not before.root

    def lingering(s: str) -> bool:  # attached, not hot: stays with its root until it resolves
        before = steps[s].before
        return before is not None and before.state == "firing" and bool(before.root) and not steps[s].hot

    open_ = {s: st for s, st in steps.items() if st.after is not None and not lingering(s)}
    for s, st in steps.items():
        if st.after is not None and lingering(s):
            out[s] = replace(st, after=replace(st.after, root=st.before.root))
    excess = {s: max(st.excess_usd, 0.0) for s, st in open_.items()}
    children: dict[str, list[str]] = defaultdict(list)
    for s in open_:
        for p in parents(s, teams):
            if p in open_:
                children[p].append(s)
    link: dict[str, str] = {}
    for p, kids in children.items():
        best = max(kids, key=lambda k: (excess[k], k))
        if excess[best] > 0 and excess[best] >= share * excess[p]:
            link[p] = best
    for s in open_:
        if PAIR_MARK in s:
            holders = [p for p in parents(s, teams) if p in open_ and p not in link]
            if holders:
                link[s] = max(holders, key=lambda p: (excess[p], p))
    groups: dict[str, list[str]] = defaultdict(list)
    for s in open_:
        top, seen = s, {s}
        while top in link and link[top] not in seen:
            top = link[top]
            seen.add(top)
        groups[top].append(s)
    for top, members in groups.items():
        owners = [m for m in members if delivered(m)]
        root = top if delivered(top) or not owners else min(owners, key=lambda m: (_depth(m), -excess[m], m))
        first = open_[root]
        after, transition = replace(first.after, root=""), first.transition
        firing = [m for m in members if open_[m].after.state == "firing"]
        if after.state == "pending" and firing:  # its group fired: the page names it
            after, transition = replace(after, state="firing"), "firing"
        if after.state == "firing":
            if first.before is not None and first.before.state == "firing" and first.before.root:
                transition = "firing"  # detached: explained by nobody open, it speaks for itself now
            severity = after.severity
            for m in firing:
                if not delivered(m):
                    severity = worse(severity, open_[m].after.severity)
            if severity != after.severity:
                after = replace(after, severity=severity)
                transition = transition or "firing"  # escalated: its trigger again, at the group's severity
        out[root] = replace(first, after=after, transition=transition)
        for m in members:
            if m != root and not delivered(m):
                out[m] = replace(open_[m], after=replace(open_[m].after, root=after.dedup_key))
    return out


def lifted(steps: Mapping[str, Step], root_key: str) -> list[str]:
    """The subjects attached to the incident ``root_key``, most specific first."""
    return sorted((s for s, st in steps.items() if st.after is not None and st.after.root == root_key),
                  key=lambda s: (_depth(s), s))
