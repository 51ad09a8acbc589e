"""Run the evaluation: every seed × shape, each rule set, one markdown table (``--out`` appends it to a file).

    PYTHONPATH=. .venv/bin/python -m bench.detector_eval --rules current --seeds 1 2 3 4 5
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import Counter
from collections.abc import Callable

from bench.detector_eval import rules, score
from bench.detector_eval.traces import SHAPES, load
from bench.detector_eval.traffic import World, generate

RuleSet = dict[str, Callable[[World], list[rules.Fired]]]


def rule_sets() -> dict[str, RuleSet]:
    sets: dict[str, RuleSet] = {
        "current": {"spend": rules.current_spend_anomaly, "retries": rules.current_retry_storm},
        "litellm": {"spend": rules.litellm_daily},
    }
    try:
        from bench.detector_eval import rules_noise
    except ImportError:  # before the detectors that know their noise
        return sets
    # retries first: a round steps the storms before the spend anomalies, which join a storm that pages already
    sets["noise"] = {"retries": rules_noise.retries, "spend": rules_noise.spend}
    # as before one incident, one page: every subject its own incident (issue 18's outside evaluation)
    sets["noise-apart"] = {"spend": functools.partial(rules_noise.spend, correlated=False),
                           "retries": functools.partial(rules_noise.retries, correlated=False)}
    return sets


def evaluate(names: list[str], seeds: list[int], shapes: list[str],
             families: tuple[str, ...] = ("spend", "retries")) -> tuple[dict, dict]:
    totals: dict[tuple[str, str], score.Score] = {}
    extra: dict[str, dict] = {}
    for shape in shapes:
        trace = load(shape)
        for seed in seeds:
            world = generate(trace, seed)
            for name in names:
                fired_all: list[rules.Fired] = []
                storms: list[rules.Fired] | None = None
                for family, rule in rule_sets()[name].items():
                    if family not in families:
                        continue
                    fired = rule(world, storms=storms) if name == "noise" and family == "spend" else rule(world)
                    storms = fired if family == "retries" else storms
                    fired_all += fired
                    s = score.score(world, fired, name, family)
                    key = (name, family)
                    totals[key] = totals[key].merge(s) if key in totals else s
                info = extra.setdefault(name, {"runs": 0, "messages": {}, "unresolved": 0, "per_incident": {}})
                if name.startswith("noise"):
                    from bench.detector_eval import flaps, rules_noise
                    for dest, counts in rules_noise.messages_per_incident(world, fired_all).items():
                        info["per_incident"].setdefault(dest, []).extend(counts)
                    found = flaps.flaps(world, fired_all)
                    info["flaps"] = info["flaps"].merge(found) if "flaps" in info else found
                info["runs"] += 1
                routed = (rules_messages(name, world, fired_all))
                for dest, n in routed.items():
                    info["messages"][dest] = info["messages"].get(dest, 0.0) + n
                info["unresolved"] += score.unresolved_pages(fired_all) if name == "current" else 0
    return totals, extra


def rules_messages(name: str, world: World, fired: list[rules.Fired]) -> dict[str, float]:
    if name.startswith("noise"):
        from bench.detector_eval import rules_noise
        return rules_noise.messages(world, fired)
    return score.messages_per_day(world, fired, {"slack (every alert)": "all", "on-call (error and up)": "oncall"})


def table(totals: dict, extra: dict, *, seeds: list[int], shapes: list[str]) -> str:
    lines = [f"{len(seeds)} seeds ({' '.join(map(str, seeds))}) × {len(shapes)} shapes ({', '.join(shapes)}); "
             f"recall over incidents with ≥ ${score.FLOOR_USD:.0f} excess (spend) or all (retries)", "",
             "| rules | family | recall | precision | false alarms/day/100 keys | negative-control alerts | "
             "delay p50 / p90 (min) | spike delay p50 / p90 | creep found (≤ 2 d) | $ before first alert p50 / p90 | "
             "most firings of one subject |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, family), s in sorted(totals.items()):
        creep = f"{len(s.creep_delays)}" if family == "spend" else "–"
        lines.append(
            f"| {name} | {family} | {s.recall:.2f} ({s.detected}/{s.incidents}) | {s.precision:.2f} "
            f"({s.true_alerts}/{s.alerts}) | {s.false_per_day_per_100:.2f} | {s.control_alerts} | "
            f"{score.percentile(s.delays, 50):.0f} / {score.percentile(s.delays, 90):.0f} | "
            f"{score.percentile(s.spike_delays, 50):.0f} / {score.percentile(s.spike_delays, 90):.0f} | {creep} | "
            f"{score.percentile(s.usd_before, 50):.0f} / {score.percentile(s.usd_before, 90):.0f} | {s.refires_max} |")
    lines.append("")
    for name, info in extra.items():
        per = ", ".join(f"{d}: {n / info['runs']:.1f}" for d, n in info["messages"].items())
        lines.append(f"- {name}: messages per destination per day (mean over runs): {per}"
                     + (f"; PagerDuty incidents left open (resolve never routed): {info['unresolved']}"
                        if name == "current" else ""))
    for name, info in extra.items():
        for dest, counts in info.get("per_incident", {}).items():
            if counts:
                over = sum(n > 2 for n in counts)
                lines.append(f"- {name}: messages per incident to {dest} (incidents with any: {len(counts)}): max "
                             f"{max(counts)}, median {score.percentile(counts, 50):.0f}, over 2: {over} "
                             f"({over / len(counts):.0%})")
    for name, info in extra.items():
        if "flaps" in info:
            from bench.detector_eval import flaps
            lines += flaps.lines(name, info["flaps"])
    for (name, family), s in sorted(totals.items()):
        if s.attached:
            lines.append(f"- {name}/{family}: {s.attached} triggers stored as part of another subject's incident "
                         "(not delivered; not scored as alerts)")
    for (name, family), s in sorted(totals.items()):
        lines.append(f"- found by {name}/{family} (delay p50 / p90 min): " + ", ".join(
            f"{kind} {s.found[kind]}/{n} ({score.percentile(s.kind_delays.get(kind, []), 50):.0f} / "
            f"{score.percentile(s.kind_delays.get(kind, []), 90):.0f})" for kind, n in s.counted.items()))
        if s.control_alerts:
            lines.append(f"- control alerts of {name}/{family}: " + ", ".join(
                f"{kind} {n}" for kind, n in s.control_by.most_common()))
        lines.append(f"- quiet blips with an alert ({name}/{family}): {s.blips_alerted} of {s.blips}")
    for (name, family), s in sorted(totals.items()):
        if s.missed:
            kinds = Counter(m.split("@")[0] for m in s.missed)
            lines.append(f"- missed by {name}/{family} ({len(s.missed)}): "
                         + ", ".join(f"{kind} {n}" for kind, n in kinds.most_common()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", nargs="+", default=["current", "litellm"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--families", nargs="+", default=["spend", "retries"], choices=["spend", "retries"],
                        help="which detector families to run (messages per destination count only theirs)")
    parser.add_argument("--out", help="append the table to this file")
    args = parser.parse_args()
    started = time.monotonic()
    totals, extra = evaluate(args.rules, args.seeds, args.shapes, tuple(args.families))
    text = table(totals, extra, seeds=args.seeds, shapes=args.shapes)
    text += f"\n\n({time.monotonic() - started:.0f} s)"
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
