"""The SLA report's histogram of time to clear, as inline SVG (no namespace URL, nothing
fetched); every value is HTML-escaped."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from jmlsync.report.sla.build import SlaReport, format_seconds

_WIDTH, _HEIGHT = 720, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 20, 44, 56
_SLA_MULTIPLES_SHOWN = 3
_WITHIN_FILL, _LATE_FILL = "#5b7a99", "#b24a3b"


@dataclass(frozen=True)
class _Histogram:
    """Buckets ``(i * width, (i + 1) * width]`` of seconds; the SLA is always a bucket edge."""

    width: float
    per_sla: int
    counts: tuple[int, ...]
    overflow: bool

    @property
    def axis_max(self) -> float:
        return self.width * len(self.counts)


def _histogram(seconds: Sequence[float], sla_seconds: int) -> _Histogram:
    per_sla = _buckets_per_sla(sla_seconds)
    width = sla_seconds / per_sla
    last = _SLA_MULTIPLES_SHOWN * per_sla
    indices = [max(math.ceil(value / width) - 1, 0) for value in seconds]
    size = min(max(per_sla + 2, max(indices, default=0) + 1), last + 1)
    counts = [0] * size
    for index in indices:
        counts[min(index, size - 1)] += 1
    return _Histogram(width, per_sla, tuple(counts), overflow=max(indices, default=0) >= last)


def _buckets_per_sla(sla_seconds: int) -> int:
    """Near ten buckets up to the SLA, of a whole number of seconds when the SLA allows it."""
    divisors = [n for n in range(4, 21) if sla_seconds % n == 0]
    return min(divisors, key=lambda n: abs(n - 10), default=10)


def histogram_block(report: SlaReport) -> str:
    """The time-to-clear histogram as inline SVG, with notes on what it leaves out."""
    seconds = [o.seconds_to_clear for o in report.leavers if o.seconds_to_clear is not None]
    histogram = _histogram(seconds, report.sla_seconds)
    notes = []
    if histogram.overflow:
        edge = format_seconds(_SLA_MULTIPLES_SHOWN * report.sla_seconds)
        notes.append(f"The last bar gathers every leaver cleared after {edge} s.")
    if len(seconds) < len(report.leavers):
        notes.append(
            f"{len(report.leavers) - len(seconds)} leaver(s) not yet cleared are not shown."
        )
    paragraphs = "".join(f'\n<p class="note">{_e(note)}</p>' for note in notes)
    return _svg(histogram, report.sla_seconds, len(seconds)) + paragraphs


def _svg(histogram: _Histogram, sla_seconds: int, shown: int) -> str:
    title = (
        f"Histogram of time to clear for {shown} leaver(s), in buckets of"
        f" {format_seconds(histogram.width)} s, with the SLA of {sla_seconds} s marked"
    )
    parts = [
        f'<svg class="histogram" width="{_WIDTH}" height="{_HEIGHT}"'
        f' viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-labelledby="histogram-title"'
        ' font-family="system-ui, sans-serif" font-size="12">',
        f'<title id="histogram-title">{_e(title)}</title>',
        *_y_axis(histogram),
        *_bars(histogram),
        *_x_axis(histogram),
        *_sla_marker(histogram, sla_seconds),
    ]
    if shown == 0:
        parts.append(
            f'<text x="{_WIDTH / 2:.1f}" y="{(_TOP + _HEIGHT - _BOTTOM) / 2:.1f}"'
            ' text-anchor="middle" fill="#333">No leaver cleared in this window</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _x(histogram: _Histogram, seconds: float) -> float:
    return _LEFT + seconds / histogram.axis_max * (_WIDTH - _LEFT - _RIGHT)


def _y(count: float, top: int) -> float:
    return _HEIGHT - _BOTTOM - count / top * (_HEIGHT - _BOTTOM - _TOP)


def _count_step(peak: int) -> int:
    magnitude = 1
    while True:
        for step in (magnitude, 2 * magnitude, 5 * magnitude):
            if math.ceil(peak / step) <= 5:
                return step
        magnitude *= 10


def _y_top(histogram: _Histogram) -> tuple[int, int]:
    peak = max(max(histogram.counts), 1)
    step = _count_step(peak)
    return step * math.ceil(peak / step), step


def _y_axis(histogram: _Histogram) -> list[str]:
    top, step = _y_top(histogram)
    parts = []
    for count in range(0, top + 1, step):
        y = _y(count, top)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{_WIDTH - _RIGHT}" y2="{y:.1f}"'
            ' stroke="#ddd" />'
        )
        parts.append(
            f'<text class="ytick" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{count}</text>'
        )
    middle = (_TOP + _HEIGHT - _BOTTOM) / 2
    parts.append(
        f'<text class="axis-title" x="16" y="{middle:.1f}" text-anchor="middle"'
        f' transform="rotate(-90 16 {middle:.1f})">Leavers</text>'
    )
    return parts


def _bars(histogram: _Histogram) -> list[str]:
    top, _ = _y_top(histogram)
    parts = []
    for index, count in enumerate(histogram.counts):
        if not count:
            continue
        low, high = index * histogram.width, (index + 1) * histogram.width
        late = index >= histogram.per_sla
        x0, x1, y = _x(histogram, low) + 1, _x(histogram, high) - 1, _y(count, top)
        span = f"{format_seconds(low)} to {format_seconds(high)} s: {count}"
        if histogram.overflow and index == len(histogram.counts) - 1:
            span = f"over {format_seconds(low)} s: {count}"
        parts.append(
            f'<rect class="bar {"late" if late else "within"}" x="{x0:.1f}" y="{y:.1f}"'
            f' width="{max(x1 - x0, 1):.1f}" height="{_HEIGHT - _BOTTOM - y:.1f}"'
            f' fill="{_LATE_FILL if late else _WITHIN_FILL}"><title>{_e(span)}</title></rect>'
        )
    if histogram.overflow:
        parts.append(_overflow_label(histogram, top))
    return parts


def _overflow_label(histogram: _Histogram, top: int) -> str:
    low = (len(histogram.counts) - 1) * histogram.width
    y = _y(histogram.counts[-1], top) - 6
    return (
        f'<text class="overflow" x="{_WIDTH - _RIGHT}" y="{y:.1f}" text-anchor="end">'
        f"&gt; {_e(format_seconds(low))} s</text>"
    )


def _x_axis(histogram: _Histogram) -> list[str]:
    baseline = _HEIGHT - _BOTTOM
    parts = [
        f'<line class="axis" x1="{_LEFT}" y1="{baseline}" x2="{_WIDTH - _RIGHT}" y2="{baseline}"'
        ' stroke="#333" />'
    ]
    edges = len(histogram.counts) - (1 if histogram.overflow else 0)
    step = _label_step(histogram.per_sla, len(histogram.counts))
    for edge in range(0, edges + 1, step):
        x = _x(histogram, edge * histogram.width)
        parts.append(
            f'<line x1="{x:.1f}" y1="{baseline}" x2="{x:.1f}" y2="{baseline + 5}" stroke="#333" />'
        )
        parts.append(
            f'<text class="xtick" x="{x:.1f}" y="{baseline + 18}" text-anchor="middle">'
            f"{_e(format_seconds(edge * histogram.width))}</text>"
        )
    parts.append(
        f'<text class="axis-title" x="{(_LEFT + _WIDTH - _RIGHT) / 2:.1f}" y="{_HEIGHT - 12}"'
        ' text-anchor="middle">Time to clear (seconds)</text>'
    )
    return parts


def _label_step(per_sla: int, buckets: int) -> int:
    """Label at most about ten edges, always including the SLA's."""
    return min(s for s in range(1, per_sla + 1) if per_sla % s == 0 and buckets / s <= 10)


def _sla_marker(histogram: _Histogram, sla_seconds: int) -> list[str]:
    x = _x(histogram, sla_seconds)
    legend_y = 18
    right = _WIDTH - _RIGHT
    return [
        f'<line class="sla" x1="{x:.1f}" y1="{_TOP - 6}" x2="{x:.1f}" y2="{_HEIGHT - _BOTTOM}"'
        ' stroke="#000" stroke-width="2" stroke-dasharray="6 3" />',
        f'<rect x="{_LEFT}" y="{legend_y - 9}" width="12" height="12" fill="{_WITHIN_FILL}" />',
        f'<text x="{_LEFT + 18}" y="{legend_y + 1}">cleared within SLA</text>',
        f'<rect x="{_LEFT + 150}" y="{legend_y - 9}" width="12" height="12" fill="{_LATE_FILL}" />',
        f'<text x="{_LEFT + 168}" y="{legend_y + 1}">cleared after SLA</text>',
        f'<line x1="{right - 100}" y1="{legend_y - 3}" x2="{right - 76}" y2="{legend_y - 3}"'
        ' stroke="#000" stroke-width="2" stroke-dasharray="6 3" />',
        f'<text class="legend-sla" x="{right - 70}" y="{legend_y + 1}">SLA {sla_seconds} s</text>',
    ]


def _e(text: str) -> str:
    return escape(text, quote=True)
