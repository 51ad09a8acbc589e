"""The report's charts: Vega-Lite specifications rendered to static SVG, offline, by ``vl-convert``.

Each chart is rendered twice, for a phone (:data:`NARROW_PX`) and for a desk
(:data:`WIDE_PX`); the page shows the one that fits (``report._CSS``) and scales it
to its column, so text keeps its size instead of shrinking with the chart.
Vega-Lite lays out axes, labels and legends itself (``autosize: fit`` keeps them
inside the drawing; long names are cut with an ellipsis, never clipped). Time runs
on a discrete axis of the report's buckets, so a period of one bucket still
draws one bar or one point. Every chart has one unit per axis: the GPU chart is
two charts, dollars above utilisation, rather than two units on one axis.

Nothing is fetched: vl-convert bundles Vega, Vega-Lite and its JavaScript runtime.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import vl_convert

NARROW_PX, WIDE_PX = 358, 780
HEIGHT_PX = 240
AXIS_ROOM_PX = 80  # a y axis's labels and title, beside a plot in a stack of views
PADDING_PX = 8
LABEL_ROOM_PX = 32  # half a time label ("11-30 14:00")
# Liberation Sans is metric-compatible with Arial and Helvetica: text measured here keeps its width
# wherever the report is opened.
FONT = "Liberation Sans, Arial, Helvetica, sans-serif"
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac"]
DOLLARS, TOKENS, SHARE = "$,.4~f", "~s", ".0%"
_CONFIG = {"font": FONT, "view": {"stroke": None}, "range": {"category": PALETTE},
           "axis": {"labelFontSize": 11, "titleFontSize": 11, "labelLimit": 160, "grid": True},
           "legend": {"labelFontSize": 11, "titleFontSize": 11, "labelLimit": 140, "orient": "bottom",
                      "direction": "horizontal", "columns": 3}}
LEGEND_SYMBOL_PX = 30  # a legend entry's symbol, its offset and the padding between columns


def _legend(width_px: int) -> dict[str, Any]:
    """The legend at a width: its columns fit beside the y axis's room, each label cut with an ellipsis at
    its column's width (three columns of 140 px ran past a phone's 358: a long team name was drawn off the
    edge). A phone gets two columns, so a label keeps about 16 characters."""
    columns = 2 if width_px <= NARROW_PX else _CONFIG["legend"]["columns"]
    room = (width_px - 2 * PADDING_PX - AXIS_ROOM_PX) // columns - LEGEND_SYMBOL_PX
    return {**_CONFIG["legend"], "columns": columns, "labelLimit": min(_CONFIG["legend"]["labelLimit"], room)}


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart as the page embeds it: the narrow and the wide SVG, and what it shows (for screen readers)."""

    narrow_svg: str
    wide_svg: str
    label: str


def warm_up() -> None:
    """Start vl-convert's JavaScript runtime, which its first call does (about a second): a caller can have
    it done on another thread while it reads the charts' data."""
    vl_convert.vegalite_to_svg({**empty(""), "config": _CONFIG})


def render(spec: dict[str, Any], label: str) -> Chart:
    """``spec`` (without size) drawn at both widths."""
    return Chart(_svg(spec, NARROW_PX, label), _svg(spec, WIDE_PX, label), label)


def _svg(spec: dict[str, Any], width_px: int, label: str) -> str:
    # Vega-Lite fits only single views to a width; a stack of views gets its plots' width less the axis room.
    # There the last time label, centred on its band, may reach past the plot: the right padding makes room.
    composed = "vconcat" in spec
    autosize = {"type": "pad"} if composed else {"type": "fit", "contains": "padding"}
    padding = {"left": PADDING_PX, "top": PADDING_PX, "bottom": PADDING_PX,
               "right": PADDING_PX + (LABEL_ROOM_PX if composed else 0)}
    config = _unlimited({**_CONFIG, "legend": _legend(width_px)}, spec)
    full = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "config": config, "autosize": autosize,
            "padding": padding,
            **_sized(spec, width_px - AXIS_ROOM_PX - LABEL_ROOM_PX if composed else width_px)}
    svg = vl_convert.vegalite_to_svg(full)
    # The page scales the drawing to its column (CSS); the viewBox keeps its proportions.
    svg = re.sub(r'^<svg([^>]*?) width="[\d.]+" height="[\d.]+"', r"<svg\1", svg, count=1)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{_attr(label)}" ', 1)


# No glyph of an 11 px label is wider than this (Liberation Sans' widest, "@", is 1.015 em): a label of n
# characters is at most n times it wide, so one within a limit's characters is never cut.
WIDEST_GLYPH_PX = 1.2 * 11
PERIOD_LABEL_CHARS = 11  # a time label as _period_axis draws it: "11-30 14:00"


def _unlimited(config: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """``config`` without the label limits no label of ``spec`` can reach: the same drawing, drawn sooner.

    With a ``labelLimit`` Vega measures every label to see whether it must be cut (a call into
    vl-convert's font measurement each), about a quarter of a report's rendering; when every name that
    could be a label is short enough that even its widest glyphs fit the limit, no label is cut, and the
    SVG is byte for byte the one drawn with the limit (checked on the 5M and 50M reports). The discrete
    axes' labels are any text in the data (a time period as it is drawn), the legends' the series names;
    the quantitative axes keep their limit (their tick labels are not in the data).
    """
    if _longest(spec) * WIDEST_GLYPH_PX <= config["axis"]["labelLimit"]:
        config = {**config, "axisDiscrete": {"labelLimit": 0}}
    if _longest(spec, "series") * WIDEST_GLYPH_PX <= config["legend"]["labelLimit"]:
        config = {**config, "legend": {**config["legend"], "labelLimit": 0}}
    if _longest_tick(spec) * WIDEST_GLYPH_PX <= config["axis"]["labelLimit"]:
        config = {**config, "axisQuantitative": {"labelLimit": 0}}
    return config


def _longest_tick(spec: dict[str, Any]) -> float:
    """At most how many characters a tick label of ``spec``'s quantitative axes has (inf if unknown).

    A tick is at most the axis's nice maximum, under twice the largest stack (a tick step is at most the
    domain's maximum, and nice rounds up by less than a step), and a stack is at most the sum of every value
    drawn. In dollars a tick has decimals only when the step is below 1, which takes a maximum under the tick
    count (~20 at most here), and then at most four (``~f`` trims); in tokens SI prefixes keep it to six
    digits; a share is a whole percentage.
    """
    formats = set(_formats(spec))
    top = 2 * max(sum(abs(v) for v in _values(spec)), 1)
    digits = len(f"{int(top):d}")
    dollars = 1 + digits + (digits - 1) // 3 + (5 if top < 20 else 0)
    longest = {DOLLARS: dollars, TOKENS: 9, SHARE: len(f"{int(top * 100):d}%")}
    return max((longest.get(f, math.inf) for f in formats), default=0)


def _parts(spec: Any) -> list[dict[str, Any]]:
    """``spec`` and every view inside it."""
    if not isinstance(spec, dict):
        return []
    return [spec, *(p for key in ("layer", "vconcat") for part in spec.get(key, []) for p in _parts(part))]


def _formats(spec: dict[str, Any]) -> list[str]:
    return [axis["format"] for part in _parts(spec) for channel in part.get("encoding", {}).values()
            if isinstance(channel, dict) and channel.get("type") == "quantitative"
            for axis in [channel.get("axis") or {"format": ""}]]


def _values(spec: dict[str, Any]) -> list[float]:
    return [v for part in _parts(spec) for row in part.get("data", {}).get("values", [])
            for v in [row.get("value")] if isinstance(v, (int, float))]


def _longest(spec: Any, field: str | None = None) -> int:
    """The most characters of a text value in ``spec``'s data (of ``field``, or of any; a period as drawn)."""
    if isinstance(spec, list):
        return max((_longest(part, field) for part in spec), default=0)
    if not isinstance(spec, dict):
        return 0
    longest = max(_longest(spec.get("layer", []), field), _longest(spec.get("vconcat", []), field))
    for row in spec.get("data", {}).get("values", []):
        for key, value in row.items():
            if isinstance(value, str) and field in (None, key):
                longest = max(longest, PERIOD_LABEL_CHARS if key == "period" else len(value))
    return longest


def _sized(spec: dict[str, Any], width_px: int) -> dict[str, Any]:
    if "vconcat" in spec:
        return {**spec, "vconcat": [_sized(part, width_px) for part in spec["vconcat"]]}
    return {"width": width_px, "height": spec.get("height", HEIGHT_PX), **spec}


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def empty(message: str) -> dict[str, Any]:
    """A chart that says there is nothing to draw."""
    return {"height": 60, "data": {"values": [{"message": message}]},
            "mark": {"type": "text", "fontSize": 14, "color": "#888"}, "encoding": {"text": {"field": "message"}}}


def _period_axis(periods: Sequence[str]) -> dict[str, Any]:
    """The time axis: every bucket of the period, those without data too; "2026-11-30 14:00:00" is labelled
    "11-30 14:00", and Vega drops labels that would overlap."""
    return {"field": "period", "type": "ordinal", "title": None, "sort": list(periods),
            "scale": {"domain": list(periods)},
            "axis": {"labelExpr": "slice(datum.label, 5, 16)", "labelAngle": 0, "labelOverlap": "greedy",
                     "labelPadding": 4}}


def stacked_bars(periods: Sequence[str], series: dict[str, list[float]], markers: Sequence[tuple[str, str]] = (),
                 *, unit: str = DOLLARS, title: str = "USD") -> dict[str, Any]:
    """Bars per period stacked by series, with a dashed rule at each marker's period."""
    values = [{"period": p, "series": name, "value": points[i]}
              for name, points in series.items() for i, p in enumerate(periods) if points[i]]
    if not values:
        return empty("no data in this period")
    bars = {"mark": "bar", "data": {"values": values},
            "encoding": {"x": _period_axis(periods),
                         "y": {"field": "value", "type": "quantitative", "aggregate": "sum", "title": title,
                               "axis": {"format": unit}},
                         # one series needs no legend: the caption and the axis title name it
                         "color": {"field": "series", "type": "nominal", "title": None,
                                   **({"legend": None} if len(series) == 1 else {})},
                         "tooltip": [{"field": "period"}, {"field": "series"},
                                     {"field": "value", "aggregate": "sum", "format": unit}]}}
    marks = [{"period": p, "alert": text} for at, text in markers if (p := nearest(periods, at)) is not None]
    if not marks:
        return bars
    rules = {"mark": {"type": "rule", "color": "#e15759", "strokeDash": [4, 3]}, "data": {"values": marks},
             "encoding": {"x": _period_axis(periods), "tooltip": [{"field": "alert"}]}}
    return {"layer": [bars, rules]}


def ranking(items: Sequence[tuple[str, float]], *, unit: str = DOLLARS, title: str = "USD") -> dict[str, Any]:
    """Horizontal bars, largest first (at most ten; zeros left out)."""
    values = [{"name": name, "value": value} for name, value in items if value > 0][:10]
    if not values:
        return empty("no data in this period")
    return {"height": 24 * len(values) + 30, "data": {"values": values}, "mark": "bar",
            "encoding": {"y": {"field": "name", "type": "nominal", "title": None, "sort": "-x"},
                         "x": {"field": "value", "type": "quantitative", "title": title, "axis": {"format": unit,
                                                                                                  "tickCount": 4}},
                         "color": {"field": "name", "type": "nominal", "legend": None, "sort": "-x"},
                         "tooltip": [{"field": "name"}, {"field": "value", "format": unit}]}}


def lines(periods: Sequence[str], series: dict[str, list[float | None]], *, unit: str = DOLLARS,
          title: str = "USD", nothing: str = "no data in this period") -> dict[str, Any]:
    """A line per series with a point at each value, so one period still shows; ``nothing`` if none has one."""
    values = [{"period": p, "series": name, "value": v}
              for name, points in series.items() for p, v in zip(periods, points, strict=True) if v is not None]
    if not values:
        return empty(nothing)
    return {"data": {"values": values}, "mark": {"type": "line", "point": True},
            "encoding": {"x": _period_axis(periods),
                         "y": {"field": "value", "type": "quantitative", "title": title, "axis": {"format": unit}},
                         "color": {"field": "series", "type": "nominal", "title": None},
                         "tooltip": [{"field": "period"}, {"field": "series"}, {"field": "value", "format": unit}]}}


def timeline(periods: Sequence[str], markers: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """One point per alert at its period, one row per alert text."""
    values = [{"period": p, "alert": text} for at, text in markers if (p := nearest(periods, at)) is not None]
    if not periods or not values:
        return empty("no alerts in this period")
    return {"height": 28 * len({v["alert"] for v in values}) + 30, "data": {"values": values},
            "mark": {"type": "point", "filled": True, "size": 90, "color": "#e15759"},
            "encoding": {"x": _period_axis(periods),
                         "y": {"field": "alert", "type": "nominal", "title": None},
                         "tooltip": [{"field": "period"}, {"field": "alert"}]}}


def cost_and_utilisation(periods: Sequence[str], cost: Sequence[float], share: Sequence[float | None],
                         share_label: str) -> dict[str, Any]:
    """GPU cost (USD) above a utilisation share (0–100 %): two charts on one time axis, one unit each."""
    if not periods:
        return empty("no GPU samples in this period")
    dollars = stacked_bars(periods, {"GPU cost": list(cost)})
    dollars = {**dollars, "height": 160}
    share_chart = lines(periods, {share_label: list(share)}, unit=SHARE, title=share_label,
                        nothing=f"no {share_label} readings in this period")
    share_chart = {**share_chart, "height": 120}
    if "y" in share_chart.get("encoding", {}):  # else it says there is no reading
        share_chart["encoding"]["y"]["scale"] = {"domain": [0, 1]}
    return {"vconcat": [dollars, share_chart], "resolve": {"scale": {"color": "independent"}}}


def nearest(periods: Sequence[str], at: str) -> str | None:
    """The bucket ``at`` falls in: the last period that starts at or before it (else the first)."""
    earlier = [p for p in periods if p <= at[:len(p)]]
    return earlier[-1] if earlier else (periods[0] if periods else None)
