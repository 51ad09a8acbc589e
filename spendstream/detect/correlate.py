"""One incident, one page: the spend subjects one cause lifts together become one incident, named after the most
specific of them.

The spend detector watches nested subjects: a team holds features; a feature × customer pair is
part of its feature and of its customer; a feature × customer × model (a *leaf*: the pair's traffic on one
model) is part of its pair, its feature and its customer. One customer hammering one feature on one model lifts
all five, and each has its own incident (:class:`~spendstream.detect.incidents.Hysteresis`). Every pass, after each
subject's state machine has stepped, :func:`correlate` groups the subjects that are open (pending or
firing):

- a subject is **explained** by its open child with the largest excess when that child's excess
  (dollars above expected, this pass) is at least ``share`` of its own: most of the parent's excess
  is the child's. Half is the line: above it, no other child can account for as much, so the child
  is the best single name for the parent's rise; under it, the parent has a rise of its own (a
  feature-wide spike whose pairs each hold a little: the feature is the root, its team attached);
- a pair (or a leaf) that no child explains is **held** by an open parent that no child explains (a customer
  abusing three features: no pair explains the customer, it is the root and the pairs join it);
  pairs and leaves of one customer that is not open themselves are one group (one actor: a creep over its
  features lifts its pairs and not yet the customer), under the largest of those not explaining another
  (a leaf that explains its pair names the group, not the pair); so are those of an open customer that another of
  its pairs or leaves explains (the creep has lifted the customer too: its smaller pairs join the one naming it);
- a feature and a customer that **rose alike** (:func:`same_rise`: excesses within ``SAME`` of each other, no
  open pair or leaf of the two, neither explained) are one actor's: a spike on a busy pair held to its busy-hour peak,
  or a slow burn on one customer's feature (a pair has no slow window);
- following those links from any subject ends at its group's root. The root's incident is
  delivered; every other member's incident is stored *attached* to it (``Incident.root``: the
  root's dedup key), its alerts kept in ``alerts`` with ``correlated_with`` and not delivered.

Each subject keeps its own state machine, so its resolve is exact. What has been delivered cannot
be taken back: a subject already paging on its own stays its own incident, and a group that forms
around it later is attached to it. A pending root whose group has a firing member fires now (the page
names the most specific subject, not the first to cross its line), at the worst severity of the members
it carries (an attached subject that grows past the paging line escalates its root: the root's trigger
again, same key). An attached subject stays part of its root's incident while that is open, even if it
outgrows it: the page already names it, and a second page for one open incident is the noise this
module removes; so does one attached while still pending (a feature that rose alike with a paging customer,
whose pair turns hot a pass later). One that outlives its root (hot on a pass after the root closed, explained by nobody
open: a root's resolve waits for its parts, so only when that root's state is gone) becomes its own
incident then, delivered under its own key; one only lingering (not hot, not yet
calm) stays attached and resolves silently. A root whose own state machine resolves it while a part it
carries is still open stays open (its resolve waits): one incident, one resolve, when all of it is calm.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace

from spendstream.detect.incidents import Incident, Transition, worse

SHARE = 0.5
SAME = 0.7  # a feature and a customer within this ratio of each other's rise, no pair open: one actor
PAIR_MARK = ",customer="  # as spendstream.detect.baseline names a feature × customer pair (and a leaf of one)
MODEL_MARK = ",model="    # as it names a feature × customer × model: ``feature=f,customer=c,model=m``


@dataclass(frozen=True, slots=True)
class Step:
    """One subject's pass: its incident before and after the state machine stepped, the message that sends."""

    before: Incident | None
    after: Incident | None
    transition: Transition | None
    excess_usd: float  # above expected in this pass's window
    hot: bool


def parents(subject: str, teams: Mapping[str, Collection[str]]) -> list[str]:
    """The subjects that hold ``subject``: a leaf's pair, feature and customer, a pair's feature and customer (the
    customer last in both), a feature's teams (``teams``), and the teams a customer's rise can explain (``teams``
    too, where the caller found the customer spent enough under them: a customer spans teams, so this is not a
    hierarchy but a link the window's dollars show)."""
    if _is_leaf(subject):
        pair = subject.split(MODEL_MARK, 1)[0]
        return [pair, *parents(pair, teams)]
    if PAIR_MARK in subject:
        feature, customer = subject.split(PAIR_MARK, 1)
        return [feature, f"customer={customer}"]
    if subject.startswith(("feature=", "customer=")):
        return sorted(teams.get(subject, ()))
    return []


def _is_leaf(subject: str) -> bool:
    return PAIR_MARK in subject and MODEL_MARK in subject


def _depth(subject: str) -> int:
    """0 for a pair or a leaf (which of them names a group is the links' to say: a leaf explaining its pair),
    1 for a feature or customer, 2 for a team."""
    return 0 if PAIR_MARK in subject else 2 if subject.startswith("team=") else 1


def correlate(steps: Mapping[str, Step], teams: Mapping[str, Collection[str]], *, share: float = SHARE,
              elsewhere: Mapping[str, str] | None = None, follow_parts: bool = False,
              holders: Mapping[str, Collection[str]] | None = None) -> dict[str, Step]:
    """``steps`` with each open subject's incident attached to its group's root (or its own: ``root`` ""), and
    the transitions that grouping changes: a pending root fired by its group, a root escalated to its members'
    worst severity, an attached subject detached.

    ``elsewhere``: subjects another detector is paging about now (:func:`paging`), each with the dedup key of
    the incident that pages. A group none of whose members pages on its own yet, with a member among them (or a
    member that is a model of a pair among them), is
    attached to that incident: an agent loop's repeated calls are the retry storm already paged *and* a spend
    rise on the same subject, one cause, one page. It stays attached while that incident is open.

    ``holders``: per customer, the features that can hold its rise (the caller found the customer spent at least
    ``share`` of its excess on them in the window). A customer no child explains joins such an open feature that
    nothing explains and that rose well beyond it (the customer's excess under ``SAME`` of the feature's: not the
    same rise, which ``same_rise`` makes the customer's): a feature-wide cause, a switch to a dearer model or a
    spike over many customers, lifts each customer a little, and each paged on its own.

    ``follow_parts``: a group none of whose members pages on its own, with a member that an open page carries (a
    feature attached to its first pair's storm, now mostly a second pair's), joins that page: the second pair is an
    update to it, not a page of its own, and the page stays open while they do. For retry storms, whose cause is the
    feature's path to its provider, one storm moving through a feature's customers; not for spend, where each pair is
    an actor of its own (a second customer's spike on a feature an old creep's page carries is news)."""
    out = dict(steps)
    elsewhere = elsewhere or {}
    held_by = holders or {}

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
        if PAIR_MARK in s and s not in link:  # a pair or a leaf; a pair its leaf explains stays linked to it
            up = parents(s, teams)
            holders = [p for p in up if p in open_ and p not in link]
            customer = up[-1]
            if holders:
                link[s] = max(holders, key=lambda p: (excess[p], p))
            elif not _leads_to(link, customer, s):  # one customer's pairs hot together are one actor's doing,
                link[s] = customer  # even when the customer as a whole is not over its line (a creep over its
                #                     features), or is and another of its pairs explains it
    for s, features in held_by.items():
        if s in open_ and s not in link and not delivered(s):  # a customer paging on its own stays its page
            held = [f for f in features if f in open_ and f not in link and excess[s] < SAME * excess[f]
                    and not _leads_to(link, f, s)]
            if held:
                link[s] = max(held, key=lambda f: (excess[f], f))
    for s, c in same_rise(open_, excess, link).items():
        link[s] = c
    groups: dict[str, list[str]] = defaultdict(list)
    for s in open_:
        top, seen = s, {s}
        while top in link and link[top] not in seen:
            top = link[top]
            seen.add(top)
        groups[top].append(s)
    # the incidents open before or after this pass (a root whose own state machine resolves it now waits for
    # what it carries, below)
    by_key = {st.after.dedup_key: s for s, st in steps.items() if st.after is not None}
    by_key |= {st.before.dedup_key: s for s, st in steps.items()
               if st.before is not None and st.before.state == "firing"}
    by_key |= {key: "" for key in elsewhere.values()}
    paged = {st.before.dedup_key: s for s, st in steps.items() if delivered(s)} | {k: "" for k in elsewhere.values()}
    for top, members in groups.items():
        owners = [m for m in members if delivered(m)]
        if top in open_ and (delivered(top) or not owners):
            root = top
        elif owners:  # the most specific subject already paging
            root = min(owners, key=lambda m: (_depth(m), -excess[m], m))
        else:  # the largest of one customer's pairs and leaves, of those no other member explains
            root = min(members, key=lambda m: (_depth(m), link.get(m) != top, -excess[m], m))
        first = open_[root]
        # attached before this pass, firing or still pending: a feature pending beside the customer whose rise it
        # matched (``same_rise``) is that customer's incident, also once the pair of the two turns hot and the match
        # no longer applies (the pair then links it to the feature, which would page on its own)
        kept = first.before.root if first.before is not None else ""
        if kept and first.before.state == "pending" and by_key.get(kept) in members:
            kept = ""  # pending under a subject of its own group: the group is named anew (below)
        if follow_parts and not kept and not delivered(root):  # a member another open page carries: the subject
            # that page already names stays that page's, and what rose beside it joins it as an update
            kept = next((k for k in (_carried_by(open_[m]) for m in sorted(members, key=lambda m: (_depth(m), m)))
                         if k in paged and paged[k] not in members), "")
        if not kept and not delivered(root):  # not paging yet: another detector's page may already say it
            kept = next((elsewhere[o] for m in sorted(members, key=lambda m: (_depth(m), m)) for o in _within(m)
                         if o in elsewhere), "")
        if kept in by_key:  # attached to an incident still open: it and its group stay part of it
            for m in members:
                if not delivered(m):
                    out[m] = replace(open_[m], after=replace(open_[m].after, root=kept))
            continue
        after, transition = replace(first.after, root=""), first.transition
        firing = [m for m in members if open_[m].after.state == "firing"]
        if after.state == "pending" and firing:  # its group fired: the page names it
            after, transition = replace(after, state="firing"), "firing"
        if (after.state == "firing" and first.before is not None and first.before.state == "firing"
                and first.before.root):
            transition = "firing"  # detached: its root resolved, nobody open explains it, it speaks for itself
        out[root] = replace(first, after=after, transition=transition)
        for m in members:
            if m != root and not delivered(m):
                out[m] = replace(open_[m], after=replace(open_[m].after, root=after.dedup_key))
    # an incident resolves when all of it has: a root calm while a part it carries is still open stays open
    carried = {st.after.root for st in out.values() if st.after is not None and st.after.root}
    for s, st in out.items():
        if st.transition == "resolved" and st.before is not None and st.before.dedup_key in carried:
            out[s] = replace(st, after=st.before, transition=None)
    # a root pages at the worst severity of what it carries: its trigger again (same key) when that is worse
    worst: dict[str, str] = {}
    for st in out.values():
        if st.after is not None and st.after.root and st.after.state == "firing":
            worst[st.after.root] = worse(worst.get(st.after.root, "info"), st.after.severity)
    for s, st in out.items():
        if st.after is not None and not st.after.root and st.after.state == "firing":
            severity = worse(st.after.severity, worst.get(st.after.dedup_key, "info"))
            if severity != st.after.severity:
                out[s] = replace(st, after=replace(st.after, severity=severity), transition=st.transition or "firing")
    return out


def _carried_by(step: Step) -> str:
    """The dedup key of the incident ``step``'s subject was part of before this pass ("": its own, or none)."""
    return step.before.root if step.before is not None else ""


def _within(subject: str) -> list[str]:
    """``subject`` and, for a leaf, its pair: what a page about the pair also covers (a quiet storm on a pair that
    lifts the spend of one of its models; the pair itself under its line)."""
    return [subject, subject.split(MODEL_MARK, 1)[0]] if _is_leaf(subject) else [subject]


def _leads_to(link: Mapping[str, str], start: str, target: str) -> bool:
    """Whether following ``link`` from ``start`` reaches ``target`` (linking ``target`` to ``start`` would close a
    loop: the customer a pair explains, through its leaf or not)."""
    at, seen = start, {start}
    while at != target and at in link and link[at] not in seen:
        at = link[at]
        seen.add(at)
    return at == target


def same_rise(open_: Collection[str], excess: Mapping[str, float], link: Mapping[str, str], *,
              same: float = SAME) -> dict[str, str]:
    """Features to join the open customer that rose by about as much (within ``same``), when no open pair of the
    two (nor a leaf of it) says how much of one is the other: a pair held to its busy-hour peak that a spike on it
    does not cross, or a slow burn (a pair is judged on its fast window only). One actor lifting the feature it all
    but fills and itself: one incident. Only subjects that nothing else explains (not linked yet) are joined, each
    feature to the closest such customer."""
    out: dict[str, str] = {}
    customers = [c for c in open_ if c.startswith("customer=") and c not in link and excess[c] > 0]
    # what each open leaf's name starts with before a MODEL_MARK: "a leaf of pair p is open" is "p in leaf_of",
    # a set lookup, not a scan of every open subject per feature and customer (150 open at 50M events)
    leaf_of = {o[:at] for o in open_ for at in _marks(o)}
    for f in open_:
        if not f.startswith("feature=") or PAIR_MARK in f or f in link or excess[f] <= 0:
            continue
        near = [c for c in customers if f"{f},{c}" not in open_ and f"{f},{c}" not in leaf_of
                and min(excess[f], excess[c]) >= same * max(excess[f], excess[c])]
        if near:
            out[f] = min(near, key=lambda c: (abs(excess[c] - excess[f]), c))
    return out


def _marks(name: str) -> list[int]:
    """Where ``MODEL_MARK`` starts in ``name``, each place."""
    at, out = name.find(MODEL_MARK), []
    while at >= 0:
        out.append(at)
        at = name.find(MODEL_MARK, at + 1)
    return out


def lifted(steps: Mapping[str, Step], root_key: str) -> list[str]:
    """The subjects attached to the incident ``root_key``, most specific first."""
    return sorted((s for s, st in steps.items() if st.after is not None and st.after.root == root_key),
                  key=lambda s: (_depth(s), s))


def headline(subject: str, lifts: list[str]) -> str:
    """A pair as on-call reads it: "customer=c on feature=f (team=t)", the team from what it lifts; a leaf
    "customer=c on feature=f, model=m (team=t)"."""
    if PAIR_MARK not in subject:
        return subject
    pair, _, model = subject.partition(MODEL_MARK) if _is_leaf(subject) else (subject, "", "")
    feature, customer = pair.split(PAIR_MARK, 1)
    teams = [s for s in lifts if s.startswith("team=")]
    on = f"{feature}, model={model}" if model else feature
    return f"customer={customer} on {on}" + (f" ({and_list(teams)})" if teams else "")


def and_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def paging(incidents: Mapping[tuple[str, str], Incident]) -> dict[str, str]:
    """Per subject of ``incidents`` (another detector's open ones, :func:`~spendstream.detect.state.load_open`)
    whose incident is firing, on its own or attached to a root that is, that page's dedup key."""
    roots = {i.dedup_key for i in incidents.values() if i.state == "firing" and not i.root}
    return {subject: i.root or i.dedup_key for (_, subject), i in incidents.items()
            if i.state == "firing" and (i.root or i.dedup_key) in roots}
