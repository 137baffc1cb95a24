"""Self-contained HTML for notebooks: escaping, tables, and a stacked-layers picture as inline SVG.

No JavaScript, no external stylesheets or fonts, so a notebook exported to HTML renders
the same offline. The ``_repr_html_`` methods of Layer, Image, Container, Registry and
the analysis results are built from these pieces; this module imports nothing of the
project, so any module may use it.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

_TABLE = "border-collapse:collapse;font-family:monospace;font-size:12px;margin:4px 0"
_CELL = "border:1px solid #ccc;padding:2px 6px;text-align:{align};vertical-align:top"
_PALETTE = ("#4e79a7", "#59a14f", "#9c755f", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#bab0ac")
UPPER_COLOUR = "#e15759"
"""The colour of a container's writable layer in the stacked picture."""


def esc(value: object) -> str:
    """``value`` as text safe inside HTML (quotes escaped too)."""
    return html.escape(str(value), quote=True)


def human(n: int) -> str:
    """Bytes for people: ``1.5 kB`` (SI units, as Docker prints sizes)."""
    f = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(f) < 1000 or unit == "TB":
            return f"{n} B" if unit == "B" else f"{f:.3g} {unit}"
        f /= 1000
    return f"{n} B"  # pragma: no cover


def short(digest: str, n: int = 12) -> str:
    """``sha256:0123456789ab`` -> ``0123456789ab`` (the first ``n`` hex digits)."""
    return digest.split(":", 1)[-1][:n]


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, right: Iterable[int] = (),
          limit: int | None = None) -> str:
    """An HTML table; columns in ``right`` are right-aligned; at most ``limit`` rows (a note says how many more)."""
    ralign = set(right)
    out = [f'<table style="{_TABLE}"><tr>']
    out += [f'<th style="{_CELL.format(align="left")};background:#f4f4f4">{esc(h)}</th>' for h in headers]
    out.append("</tr>")
    rows = list(rows)
    shown = rows if limit is None else rows[:limit]
    for row in shown:
        out.append("<tr>")
        for i, cell in enumerate(row):
            out.append(f'<td style="{_CELL.format(align="right" if i in ralign else "left")}">{esc(cell)}</td>')
        out.append("</tr>")
    out.append("</table>")
    if len(shown) < len(rows):
        out.append(f"<div style=\"font-size:11px;color:#666\">... {len(rows) - len(shown)} more rows</div>")
    return "".join(out)


def stack_svg(layers: Sequence[tuple[str, int]], upper: tuple[str, int] | None = None, *, width: int = 360) -> str:
    """A stacked picture of ``(label, bytes)`` layers, bottom layer at the bottom, as inline SVG.

    Heights grow with the size (square-root scale, at least one text line), so small
    layers stay visible; ``upper`` (a container's writable layer) is drawn on top in red.
    """
    bars = [(label, size, _PALETTE[i % len(_PALETTE)]) for i, (label, size) in enumerate(layers)]
    if upper is not None:
        bars.append((upper[0], upper[1], UPPER_COLOUR))
    biggest = max((s for _, s, _ in bars), default=0) or 1
    heights = [16 + int(40 * (s / biggest) ** 0.5) for _, s, _ in bars]
    total = sum(heights) + 2 * len(bars) + 2
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total}" '
              f'role="img" style="font-family:monospace;font-size:11px">')]
    y = total - 1
    for (label, size, colour), h in zip(bars, heights, strict=True):
        y -= h
        parts.append(f'<rect x="1" y="{y}" width="{width - 2}" height="{h}" rx="3" fill="{colour}" fill-opacity="0.8" '
                     f'stroke="#333" stroke-width="0.5"><title>{esc(label)}: {size} bytes</title></rect>')
        parts.append(f'<text x="6" y="{y + h / 2 + 4:.0f}" fill="#fff">{esc(label[:48])}  {esc(human(size))}</text>')
        y -= 2
    parts.append("</svg>")
    return "".join(parts)


def section(title: str, *body: str) -> str:
    """A titled block of HTML pieces."""
    return (f'<div style="font-family:sans-serif;font-size:13px"><div style="font-weight:bold;margin:4px 0">'
            f'{esc(title)}</div>{"".join(body)}</div>')
