"""``spendstream report``: one self-contained HTML file with charts, for people who would rather look.

The charts are SVG drawn here, in Python, from the rollups docs/sql.md reads (see
``report_tables``): no JavaScript, no CDN, nothing fetched when the file is opened — it can be mailed,
archived, or opened offline. Each chart keeps the table behind it underneath.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from spendstream.advisor import Opportunity, advise
from spendstream.invoices.compare import compare_invoices
from spendstream.sinks.ranges import between
from spendstream.sinks.rollups import CUSTOMER_HOURS, HOURS, MINUTES, Rollup
from spendstream.sinks.store import QueryResult, TextQuerier, query_result, sql_time

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac"]
WIDTH, HEIGHT, PAD = 760, 260, 48


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    svg: str
    table: QueryResult
    note: str = ""


def report_tables(querier: TextQuerier, since: datetime, until: datetime) -> dict[str, QueryResult]:
    """The tables behind the report's charts, for ``since <= ts < until``, by section name.

    Usage comes from the rollups through ``ranges.between``: exact for any range (the
    partial periods at its ends are read from raw), and equal to the same questions
    asked of ``usage_events FINAL`` (tests/test_readers_on_rollups.py keeps those as the
    reference). Each question reads the smaller rollup that has its dimensions:
    ``usage_minutes`` when the charts step by 5 minutes, ``usage_hours`` when by hours or
    days, ``customer_hours`` for customers. Rankings break ties by name, so the top ten
    are the same ten every time.
    """
    p = {"since": sql_time(since), "until": sql_time(until)}
    span = {"since": "{since:DateTime64(3, 'UTC')}", "until": "{until:DateTime64(3, 'UTC')}"}
    step = report_step(since, until)

    def q(sql: str) -> QueryResult:
        return query_result(querier, sql, p)

    grain = MINUTES if step.endswith("MINUTE") else HOURS

    def usage(bucket: str, *measures: str, rollup: Rollup = grain) -> str:
        return between(rollup, bucket, measures, **span)

    interval = f"toString(toStartOfInterval({{t}}, INTERVAL {step}))"
    return {
        "totals": q("SELECT sum(cost_usd) AS cost_usd, uniqExactMerge(requests) AS requests, "
                    "sum(attempts) AS attempts, sum(unpriced_attempts) AS unpriced "
                    f"FROM {usage('0', 'cost_usd', 'requests', 'attempts', 'unpriced_attempts')}"),
        "dead": q("SELECT count() AS n FROM dead_letters FINAL WHERE received_at >= {since:DateTime64(3, 'UTC')} "
                  "AND received_at < {until:DateTime64(3, 'UTC')}"),
        "spend": q(f"SELECT period, ifNull(team, '(none)') AS team, sum(cost_usd) AS cost_usd "
                   f"FROM {usage(interval, 'cost_usd')} GROUP BY period, team ORDER BY period, team"),
        "alerts": q("SELECT toString(created_at) AS at, toString(window_start) AS since, kind, state, subject, "
                    "message FROM alerts FINAL WHERE window_end >= {since:DateTime64(3, 'UTC')} "
                    "AND window_start < {until:DateTime64(3, 'UTC')} ORDER BY window_start"),
        "features": q(f"SELECT ifNull(feature, '(none)') AS feature, sum(cost_usd) AS cost_usd, "
                      f"sum(attempts) AS attempts FROM {usage('0', 'cost_usd', 'attempts')} "
                      "GROUP BY feature ORDER BY cost_usd DESC, feature LIMIT 10"),
        "customers": q(f"SELECT ifNull(customer, '(none)') AS customer, sum(cost_usd) AS cost_usd "
                       f"FROM {usage('0', 'cost_usd', rollup=CUSTOMER_HOURS)} "
                       "GROUP BY customer ORDER BY cost_usd DESC, customer LIMIT 10"),
        "models": q(f"SELECT model, sum(cost_usd) AS cost_usd, sum(unpriced_attempts) AS unpriced, "
                    f"sum(input_tokens) + sum(output_tokens) AS tokens "
                    f"FROM {usage('0', 'cost_usd', 'unpriced_attempts', 'input_tokens', 'output_tokens')} "
                    "GROUP BY model ORDER BY tokens DESC, model LIMIT 10"),
        "unit": q(f"SELECT period, ifNull(feature, '(none)') AS feature, "
                  f"if(uniqExactMerge(requests) = 0, 0, toFloat64(sum(cost_usd) / uniqExactMerge(requests))) "
                  f"AS usd_per_request FROM {usage(interval, 'cost_usd', 'requests')} GROUP BY period, feature "
                  "ORDER BY period, feature"),
        "waste": q(f"SELECT ifNull(feature, '(none)') AS feature, sum(failed_attempts) AS failed_attempts, "
                   f"sum(failed_cost_usd) AS wasted_usd FROM {usage('0', 'failed_attempts', 'failed_cost_usd')} "
                   "GROUP BY feature ORDER BY wasted_usd DESC, feature"),
        # GPU samples stay raw: about four rows a minute per deployment, and no rollup keeps them
        "gpu": q(f"SELECT toString(toStartOfInterval(minute, INTERVAL {step})) AS period, deployment, "
                 "sum(gpu_cost_usd) AS gpu_cost_usd, avg(gpu_utilization) AS gpu_utilization, "
                 "avg(kv_cache_utilization) AS kv_cache_utilization, sum(tokens) AS tokens FROM gpu_minutely "
                 "WHERE minute >= {since:DateTime64(3, 'UTC')} AND minute < {until:DateTime64(3, 'UTC')} "
                 "GROUP BY period, deployment ORDER BY period, deployment"),
    }


def report_step(since: datetime, until: datetime) -> str:
    """The charts' time step: about a hundred bars or fewer for any period."""
    hours = (until - since).total_seconds() / 3600
    return "5 MINUTE" if hours <= 3 else "1 HOUR" if hours <= 72 else "1 DAY"


def build_report(querier: TextQuerier, since: datetime, until: datetime) -> str:
    """The report's HTML for ``since <= ts < until``."""
    tables = report_tables(querier, since, until)
    totals, dead, spend, alerts = (tables["totals"].dicts()[0], tables["dead"].scalar(), tables["spend"],
                                   tables["alerts"])
    features, customers, models, unit, waste, gpu = (tables[name] for name in (
        "features", "customers", "models", "unit", "waste", "gpu"))

    periods = sorted({r[0] for r in spend.rows})
    by_team: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(periods))
    for period, team, cost in spend.rows:
        by_team[team][periods.index(period)] = float(cost or 0)
    markers = [(a["since"], f"{a['kind']} ({a['state']})") for a in alerts.dicts()]
    unit_series: dict[str, list[float | None]] = defaultdict(lambda: [None] * len(periods))
    for period, feature, usd in unit.rows:
        if period in periods and usd is not None:  # None: the feature's model has no price
            unit_series[feature][periods.index(period)] = float(usd)
    gpu_periods = sorted({r[0] for r in gpu.rows})
    gpu_cost = [sum(float(r[2] or 0) for r in gpu.rows if r[0] == p_) for p_ in gpu_periods]
    utilisation = [_mean([r[3] for r in gpu.rows if r[0] == p_]) for p_ in gpu_periods]
    if all(u is None for u in utilisation):  # no GPU utilisation source (dcgm/NVML): show KV-cache use instead
        utilisation = [_mean([r[4] for r in gpu.rows if r[0] == p_]) for p_ in gpu_periods]
        line_label = "KV cache use"
    else:
        line_label = "GPU utilisation"

    sections = [
        Section("Spend over time, by team", stacked_bars(periods, dict(by_team), markers=markers), spend,
                "Dashed lines mark alerts."),
        Section("Top features", hbars([(r[0], float(r[1] or 0)) for r in features.rows]), features),
        Section("Top customers", hbars([(r[0], float(r[1] or 0)) for r in customers.rows]), customers),
        Section("Model mix (tokens)", hbars([(r[0], float(r[3] or 0)) for r in models.rows], unit=" tok"), models,
                "Unpriced models are listed with their unpriced attempts; their tokens still count here."),
        Section("Cost per request, by feature", line_chart(periods, dict(unit_series)), unit),
        Section("Retry waste: what failed attempts cost", hbars([(r[0], float(r[2] or 0)) for r in waste.rows]),
                waste),
        Section("Alerts on the timeline", timeline(periods, markers), alerts),
        Section("Self-hosted GPUs: cost and utilisation", bars_and_line(gpu_periods, gpu_cost, utilisation, line_label),
                gpu,
                "" if gpu.rows else "No GPU samples in this period."),
    ]
    return _page(since, until, totals, int(dead), sections, advise(querier, since, until),
                 after=_invoice_gaps(querier, since, until))


def write_report(querier: TextQuerier, since: datetime, until: datetime, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(querier, since, until), encoding="utf-8")
    return out


# -- charts -----------------------------------------------------------------------------------------------


def _mean(values: Sequence[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _svg(body: str, height: int = HEIGHT, label: str = "chart") -> str:
    return (f'<svg class="chart" role="img" aria-label="{html.escape(label)}" viewBox="0 0 {WIDTH} {height}" '
            f'width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg">{body}</svg>')


def _empty(message: str = "no data in this period") -> str:
    return _svg(f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">{message}</text>',
                label=message)


def _axis(max_value: float, unit: str = "$") -> str:
    parts = []
    for i in range(5):
        value = max_value * i / 4
        y = HEIGHT - PAD - (HEIGHT - 2 * PAD) * i / 4
        parts.append(f'<line class="grid" x1="{PAD}" x2="{WIDTH - 10}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="tick" x="{PAD - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(value, unit)}</text>')
    return "".join(parts)


def _fmt(value: float, unit: str = "$") -> str:
    if unit == "$":
        return f"${value:,.2f}" if value >= 1 or value == 0 else f"${value:.4f}"
    return f"{value:,.0f}{unit}" if value >= 10 else f"{value:.2f}{unit}"


def _x_labels(periods: Sequence[str], x_of) -> str:
    step = max(1, len(periods) // 6)
    return "".join(f'<text class="tick" x="{x_of(i):.1f}" y="{HEIGHT - PAD + 16}" text-anchor="middle">'
                   f'{html.escape(p[5:16])}</text>' for i, p in enumerate(periods) if i % step == 0)


def _legend(names: Sequence[str]) -> str:
    return "".join(f'<rect x="{PAD + 120 * i}" y="6" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
                   f'<text class="legend" x="{PAD + 14 + 120 * i}" y="15">{html.escape(n[:16])}</text>'
                   for i, n in enumerate(names))


def stacked_bars(periods: Sequence[str], series: dict[str, list[float]],
                 markers: Sequence[tuple[str, str]] = ()) -> str:
    if not periods or not series:
        return _empty()
    names = sorted(series, key=lambda n: -sum(series[n]))
    top = max(sum(series[n][i] for n in names) for i in range(len(periods))) or 1.0
    slot = (WIDTH - PAD - 10) / len(periods)

    def x_of(i: int) -> float:
        return PAD + slot * (i + 0.5)

    bars = []
    for i in range(len(periods)):
        y = HEIGHT - PAD
        for k, name in enumerate(names):
            h = (HEIGHT - 2 * PAD) * series[name][i] / top
            if h > 0:
                bars.append(f'<rect x="{PAD + slot * i + 1:.1f}" y="{y - h:.1f}" width="{max(slot - 2, 1):.1f}" '
                            f'height="{h:.1f}" fill="{PALETTE[k % len(PALETTE)]}"><title>{html.escape(name)} '
                            f'{html.escape(periods[i])}: {_fmt(series[name][i])}</title></rect>')
                y -= h
    marks = []
    for at, label in markers:
        index = _nearest(periods, at)
        if index is not None:
            marks.append(f'<line class="marker" x1="{x_of(index):.1f}" x2="{x_of(index):.1f}" y1="{PAD - 10}" '
                         f'y2="{HEIGHT - PAD}"><title>{html.escape(label)}</title></line>')
    return _svg(_axis(top) + "".join(bars) + "".join(marks) + _x_labels(periods, x_of) + _legend(names),
                label="stacked spend")


def _nearest(periods: Sequence[str], at: str) -> int | None:
    earlier = [i for i, p in enumerate(periods) if p <= at[:len(p)]]
    return earlier[-1] if earlier else (0 if periods else None)


def hbars(items: Sequence[tuple[str, float]], unit: str = "$") -> str:
    items = [(label, value) for label, value in items if value > 0][:10]
    if not items:
        return _empty()
    top = max(v for _, v in items)
    row = (HEIGHT - 20) / len(items)
    parts = []
    for i, (label, value) in enumerate(items):
        w = (WIDTH - 260) * value / top
        y = 10 + row * i
        parts.append(f'<text class="label" x="170" y="{y + row * 0.6:.1f}" text-anchor="end">'
                     f'{html.escape(label[:28])}</text>'
                     f'<rect x="176" y="{y + 2:.1f}" width="{max(w, 1):.1f}" height="{max(row - 4, 2):.1f}" '
                     f'fill="{PALETTE[i % len(PALETTE)]}">'
                     f'<title>{html.escape(label)}: {_fmt(value, unit)}</title></rect>'
                     f'<text class="value" x="{180 + w:.1f}" y="{y + row * 0.6:.1f}">{_fmt(value, unit)}</text>')
    return _svg("".join(parts), label="ranking")


def line_chart(periods: Sequence[str], series: dict[str, list[float | None]], unit: str = "$") -> str:
    values = [v for s in series.values() for v in s if v is not None]
    if not periods or not values:
        return _empty()
    top = max(values) or 1.0
    step = (WIDTH - PAD - 20) / max(len(periods) - 1, 1)

    def x_of(i: int) -> float:
        return PAD + 10 + step * i

    lines = []
    for k, (name, points) in enumerate(sorted(series.items())):
        coords = [f"{x_of(i):.1f},{HEIGHT - PAD - (HEIGHT - 2 * PAD) * v / top:.1f}"
                  for i, v in enumerate(points) if v is not None]
        if coords:
            colour = PALETTE[k % len(PALETTE)]
            lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(coords)}">'
                         f'<title>{html.escape(name)}</title></polyline>')
    return _svg(_axis(top, unit) + "".join(lines) + _x_labels(periods, x_of) + _legend(sorted(series)),
                label="trend")


def timeline(periods: Sequence[str], markers: Sequence[tuple[str, str]]) -> str:
    if not periods:
        return _empty()
    slot = (WIDTH - PAD - 10) / len(periods)

    def x_of(i: int) -> float:
        return PAD + slot * (i + 0.5)

    axis = f'<line class="grid" x1="{PAD}" x2="{WIDTH - 10}" y1="{HEIGHT / 2}" y2="{HEIGHT / 2}"/>'
    dots = []
    for n, (at, label) in enumerate(markers):
        index = _nearest(periods, at)
        if index is not None:
            y = HEIGHT / 2 - 20 - (n % 4) * 22
            dots.append(f'<circle cx="{x_of(index):.1f}" cy="{HEIGHT / 2}" r="6" fill="{PALETTE[2]}">'
                        f'<title>{html.escape(label)}</title></circle>'
                        f'<text class="label" x="{x_of(index):.1f}" y="{y:.1f}" text-anchor="middle">'
                        f'{html.escape(label[:30])}</text>')
    if not dots:
        dots.append(f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2 - 20}" text-anchor="middle">'
                    "no alerts in this period</text>")
    return _svg(axis + "".join(dots) + _x_labels(periods, x_of), label="alerts timeline")


def bars_and_line(periods: Sequence[str], bars: Sequence[float], ratio: Sequence[float | None],
                  line_label: str = "utilisation") -> str:
    if not periods:
        return _empty("no GPU samples in this period")
    top = max(bars) or 1.0
    slot = (WIDTH - PAD - 10) / len(periods)

    def x_of(i: int) -> float:
        return PAD + slot * (i + 0.5)

    parts = [_axis(top)]
    for i, value in enumerate(bars):
        h = (HEIGHT - 2 * PAD) * value / top
        parts.append(f'<rect x="{PAD + slot * i + 1:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{max(slot - 2, 1):.1f}" '
                     f'height="{max(h, 0):.1f}" fill="{PALETTE[0]}"><title>{html.escape(periods[i])}: '
                     f'{_fmt(value)}</title></rect>')
    coords = [f"{x_of(i):.1f},{HEIGHT - PAD - (HEIGHT - 2 * PAD) * v:.1f}"
              for i, v in enumerate(ratio) if v is not None]
    if coords:
        parts.append(f'<polyline fill="none" stroke="{PALETTE[1]}" stroke-width="2" points="{" ".join(coords)}">'
                     f"<title>{html.escape(line_label)} (0–100 % on the same height)</title></polyline>")
    return _svg("".join(parts) + _x_labels(periods, x_of) + _legend(["GPU cost", line_label]),
                label="GPU cost and utilisation")


# -- page ---------------------------------------------------------------------------------------------------


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:820px;color:#222}
h1{font-size:1.5rem;margin-bottom:.2rem}.sub{color:#666;margin-top:0}
.kpis{display:flex;gap:1rem;margin:1rem 0}.kpi{background:#f5f5f7;border-radius:8px;padding:.6rem 1rem}
.kpi b{display:block;font-size:1.3rem}figure{margin:2rem 0}figcaption{font-weight:600;margin-bottom:.4rem}
.chart{background:#fff;border:1px solid #eee;border-radius:6px}.grid{stroke:#eee}.tick,.legend,.label,.value{
font-size:11px;fill:#555}.empty{font-size:14px;fill:#999}.marker{stroke:#e15759;stroke-dasharray:4 3}
table{border-collapse:collapse;font-size:12px;margin-top:.5rem}td,th{border-bottom:1px solid #eee;padding:2px 8px;
text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}.note{color:#666;font-size:12px}
h2{font-size:1.1rem;margin-top:2rem}.advice td{vertical-align:top}
"""


def _page(since: datetime, until: datetime, totals: dict[str, Any], dead: int, sections: list[Section],
          opportunities: list[Opportunity], after: str = "") -> str:
    kpis = [("Cost", _fmt(float(totals["cost_usd"] or 0))), ("Requests", f"{int(totals['requests']):,}"),
            ("Attempts", f"{int(totals['attempts']):,}"), ("Unpriced attempts", f"{int(totals['unpriced']):,}"),
            ("Dead letters", f"{dead:,}")]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>spendstream report</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>AI inference spend</h1><p class=\"sub\">{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC "
        f"· generated {generated} by spendstream</p>",
        "<div class=\"kpis\">" + "".join(f"<div class=\"kpi\">{k}<b>{v}</b></div>" for k, v in kpis) + "</div>",
    ]
    parts.append(_opportunities(opportunities))
    for section in sections:
        note = f'<p class="note">{html.escape(section.note)}</p>' if section.note else ""
        parts.append(f"<figure><figcaption>{html.escape(section.title)}</figcaption>{section.svg}{note}"
                     f"<details><summary>Table</summary>{_table(section.table)}</details></figure>")
    parts.append(after)
    parts.append("</body></html>")
    return "\n".join(parts)


def _invoice_gaps(querier: TextQuerier, since: datetime, until: datetime) -> str:
    """The provider's bill against the meter for the period's days (``spendstream reconcile --invoices``)."""
    head = "<h2>Invoices vs metered cost</h2>"
    # the comparison reads raw events of the period: only when there is a bill to compare with
    if not query_result(querier, "SELECT count() FROM invoice_lines WHERE day >= toDate({s:DateTime64(3, 'UTC')}) "
                                 "AND day < toDate({u:DateTime64(3, 'UTC')})",
                        {"s": sql_time(since), "u": sql_time(until)}).scalar():
        return head + ("<p class=\"note\">No invoice lines for these days: import the providers' cost exports with "
                       "<code>spendstream invoices import FILE</code>.</p>")
    comparison = compare_invoices(querier, since, until)
    table = QueryResult(["day", "provider", "model", "invoiced", "metered", "difference", "status"], [], [
        [str(r.day), r.provider, r.model or "(no model)", r.invoiced, r.metered, r.difference, r.status]
        for r in comparison.rows])
    matched = len(comparison.rows) - len(comparison.gaps)
    return (f"{head}<p class=\"note\">{len(comparison.gaps)} gap(s), {matched} match(es) per UTC day × provider × "
            "model; difference is invoiced minus metered.</p>" + _table(table))


def _opportunities(opportunities: list[Opportunity]) -> str:
    if not opportunities:
        return "<h2>Savings opportunities</h2><p class=\"note\">None worth a dollar a month in this period.</p>"
    rows = "".join(
        f"<tr><td class=\"n\">${o.monthly_saving_usd:,.2f}</td><td>{html.escape(o.kind)}</td>"
        f"<td>{html.escape(o.subject)}</td><td>{o.confidence}</td><td>{html.escape(o.evidence)}"
        f"<br><span class=\"note\">{html.escape(o.assumptions)}</span></td></tr>" for o in opportunities)
    return ("<h2>Savings opportunities</h2><p class=\"note\">Estimated monthly savings (this period scaled to 30 "
            "days), from <code>spendstream advise</code>.</p><table class=\"advice\"><thead><tr><th>per month</th>"
            f"<th>lever</th><th>where</th><th>confidence</th><th>evidence and assumptions</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _table(result: QueryResult) -> str:
    if not result.rows:
        return "<p class=\"note\">no rows</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in result.columns)
    rows = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in result.rows[:200])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, Decimal):
        return f'<td class="n">{value.normalize():f}</td>' if value else '<td class="n">0</td>'
    if isinstance(value, (int, float)):
        return f'<td class="n">{value:,.4g}</td>' if isinstance(value, float) else f'<td class="n">{value:,}</td>'
    return f"<td>{html.escape('' if value is None else str(value))}</td>"
