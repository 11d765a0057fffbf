"""Charts drawn on the server as SVG: no script, no library, readable without colour (each
series has its own pattern of opacity and a legend), and each one sits above its table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 720
BAR_HEIGHT = 22
SERIES_CLASSES = ("s1", "s2", "s3", "s4")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]


def _nice_max(value: float) -> float:
    """A round top for the axis: 1, 2, 2.5 or 5 times a power of ten, at least ``value``."""
    if value <= 0:
        return 1.0
    power = float(10 ** len(str(int(value)))) / 10
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)


def _number(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def columns(title: str, labels: Sequence[str], series: Sequence[Series]) -> Markup:
    """Grouped vertical bars: one group per label (a month), one bar per series."""
    height, top, bottom, left = 260, 30, 46, 48
    plot_h = height - top - bottom
    plot_w = WIDTH - left - 10
    top_value = _nice_max(max((v for s in series for v in s.values), default=0))
    group_w = plot_w / max(1, len(labels))
    bar_w = max(2.0, min(24.0, (group_w - 6) / max(1, len(series))))
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in range(5):
        value = top_value * tick / 4
        y = top + plot_h - plot_h * tick / 4
        parts.append(
            f'<line class="grid" x1="{left}" x2="{WIDTH - 10}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_number(value)}</text>"
        )
    for i, label in enumerate(labels):
        x0 = left + i * group_w + (group_w - bar_w * len(series)) / 2
        for j, s in enumerate(series):
            value = s.values[i]
            h = plot_h * value / top_value
            parts.append(
                f'<rect class="bar {SERIES_CLASSES[j % 4]}" x="{x0 + j * bar_w:.1f}" '
                f'y="{top + plot_h - h:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}">'
                f"<title>{escape(label)} · {escape(s.name)}: {_number(value)}</title></rect>"
            )
        if len(labels) <= 14 or i % max(1, len(labels) // 12) == 0:
            parts.append(
                f'<text class="axis" x="{left + i * group_w + group_w / 2:.1f}" '
                f'y="{height - bottom + 16}" text-anchor="middle">{escape(label)}</text>'
            )
    x = left
    for j, s in enumerate(series):
        parts.append(
            f'<rect class="bar {SERIES_CLASSES[j % 4]}" x="{x}" y="{height - 18}" width="12" '
            f'height="12"/><text class="legend" x="{x + 16}" y="{height - 8}">'
            f"{escape(s.name)}</text>"
        )
        x += 30 + 13 * len(s.name)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it went through escape())


def bars(
    title: str, rows: Sequence[tuple[str, float, str]], top_value: float | None = None
) -> Markup:
    """Horizontal bars, one per row: (label, value, text shown after the bar)."""
    label_w, right = 200, 90
    plot_w = WIDTH - label_w - right
    height = 10 + BAR_HEIGHT * max(1, len(rows))
    top_value = top_value or _nice_max(max((v for _, v, _ in rows), default=0))
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, value, note) in enumerate(rows):
        y = 5 + i * BAR_HEIGHT
        w = plot_w * max(0.0, value) / top_value
        short = label if len(label) <= 16 else label[:15] + "…"
        parts.append(
            f'<text class="axis" x="{label_w - 8}" y="{y + 15}" text-anchor="end">'
            f"{escape(short)}<title>{escape(label)}</title></text>"
            f'<rect class="bar s1" x="{label_w}" y="{y + 3}" width="{w:.1f}" '
            f'height="{BAR_HEIGHT - 6}"/>'
            f'<text class="value" x="{label_w + w + 6:.1f}" y="{y + 15}">{escape(note)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every text in it went through escape())
