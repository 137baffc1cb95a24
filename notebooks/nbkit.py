"""Small display helpers shared by the notebooks: a fixed clock, HTML tables, layer-stack pictures.

Everything here only *shows* things; the lessons themselves call unionfs_sim directly.
The pictures are inline SVG and the tables plain HTML, so a notebook exported with
``jupyter nbconvert --to html`` needs no JavaScript and no network to render.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import html
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from unittest import mock

import unionfs_sim as ufs

FIXED_TIME = "2024-01-01T00:00:00Z"
"""The time every write in the notebooks happens at, so digests and outputs never change."""

_clock: Any = None


def fixed_clock(when: str = FIXED_TIME) -> None:
    """Make ``time.time_ns()`` return ``when`` from now on (the model stamps mtimes with it).

    A real container engine stamps every write with the wall clock, so committing the
    same change twice gives two digests; the notebooks freeze the clock to show the same
    digests on every run. Returns the fixed time in nanoseconds.
    """
    global _clock
    t = _dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
    ns = int(t.timestamp()) * 10**9
    if _clock is not None:
        _clock.stop()
    _clock = mock.patch.object(time, "time_ns", return_value=ns)
    _clock.start()


@contextlib.contextmanager
def real_clock() -> Iterator[None]:
    """Inside the block ``time.time_ns`` is the wall clock again (to show why it matters)."""
    global _clock
    saved = _clock
    if saved is not None:
        saved.stop()
        _clock = None
    try:
        yield
    finally:
        if saved is not None:
            saved.start()
            _clock = saved


def short(digest: str, n: int = 12) -> str:
    """``sha256:0123456789ab`` -> ``0123456789ab`` (the short form docker prints)."""
    return digest.split(":", 1)[-1][:n]


def human(n: int | float) -> str:
    """A byte count the way ``docker images`` prints it (1000-based: kB, MB, GB)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.3g}{unit}"
        n /= 1000
    raise AssertionError("unreachable")


class HTML:
    """An HTML fragment that Jupyter renders (``_repr_html_``), with a plain-text fallback."""

    def __init__(self, body: str, text: str) -> None:
        self.body, self.text = body, text

    def _repr_html_(self) -> str:
        return self.body

    def __repr__(self) -> str:
        return self.text


_TABLE_STYLE = ("border-collapse:collapse;font-family:ui-monospace,Menlo,Consolas,monospace;"
                "font-size:12px;margin:4px 0")
_CELL = "border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top"


def table(rows: Iterable[Sequence[Any]], header: Sequence[str], caption: str | None = None,
          highlight: Mapping[int, str] | None = None) -> HTML:
    """An HTML table of ``rows`` (values shown with ``str``); ``highlight`` colours rows by index."""
    rows = [list(r) for r in rows]
    hl = highlight or {}
    parts = []
    if caption:
        parts.append(f'<div style="font-weight:bold;font-size:12px;margin-top:4px">{html.escape(caption)}</div>')
    parts.append(f'<table style="{_TABLE_STYLE}">')
    th = f'<th style="{_CELL};background:#f3f3f3">'
    parts.append("<tr>" + "".join(f"{th}{html.escape(h)}</th>" for h in header) + "</tr>")
    for i, r in enumerate(rows):
        bg = f";background:{hl[i]}" if i in hl else ""
        parts.append("<tr>" + "".join(f'<td style="{_CELL}{bg}">{html.escape(str(v))}</td>' for v in r) + "</tr>")
    parts.append("</table>")
    widths = [max([len(h)] + [len(str(r[i])) for r in rows]) for i, h in enumerate(header)]
    lines = ([caption] if caption else []) + ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return HTML("".join(parts), "\n".join(x.rstrip() for x in lines))


# --- entries ------------------------------------------------------------------------------

def kind(e: Any) -> str:
    """A word for a layer entry: file, dir, opaque dir, symlink, whiteout, fifo, device."""
    if e is ufs.WHITEOUT:
        return "whiteout"
    if isinstance(e, ufs.Dir):
        return "opaque dir" if e.opaque else "dir"
    return {"f": "file", "l": "symlink", "p": "fifo", "s": "socket", "c": "char device",
            "b": "block device"}.get(e.kind, e.kind)


def describe(e: Any) -> str:
    """A short description of an entry's content: size of a file, target of a link."""
    if isinstance(e, ufs.File):
        return f"{e.size} bytes"
    if isinstance(e, ufs.Symlink):
        return f"-> {e.target}"
    return ""


def changeset(layer: Mapping[str, Any], caption: str | None = None) -> HTML:
    """A layer as a table: every path it adds, changes or deletes."""
    rows = [("/" + k, kind(e), describe(e)) for k, e in sorted(layer.items(), key=lambda kv: kv[0].split("/"))]
    return table(rows, ["path", "entry", "content"], caption=caption,
                 highlight={i: "#fde2e2" for i, r in enumerate(rows) if r[1] in ("whiteout", "opaque dir")})


def merged(fs: Any, names: Sequence[str], caption: str | None = None) -> HTML:
    """The merged view as a table: every file, its size and the layer it comes from."""
    rows = []
    for top, dirs, files in fs.walk("/"):
        dirs.sort()
        for n in sorted(files) + sorted(dirs):
            p = top.rstrip("/") + "/" + n
            st = fs.lstat(p)
            i = fs.which_layer(p)
            kind_ = "dir" if fs.isdir(p) and not fs.islink(p) else ("symlink" if fs.islink(p) else "file")
            size = "" if kind_ == "dir" else (f"-> {fs.readlink(p)}" if kind_ == "symlink" else f"{st.st_size} bytes")
            rows.append((p, kind_, size, f"{i}: {names[i]}"))
    rows.sort(key=lambda r: r[0].split("/"))
    return table(rows, ["path", "type", "content", "from layer"], caption=caption)


# --- the stack picture --------------------------------------------------------------------

_FILL = {"file": "#4c78a8", "dir": "#dfe7f1", "opaque dir": "#f58518", "whiteout": "#333333",
         "symlink": "#54a24b", "fifo": "#b279a2", "char device": "#b279a2", "block device": "#b279a2",
         "socket": "#b279a2"}
_TEXT = {"file": "white", "dir": "#345", "opaque dir": "white", "whiteout": "white", "symlink": "white"}
_LABEL = {"file": "file", "dir": "dir", "opaque dir": "opaque", "whiteout": "wh", "symlink": "link"}


def _hidden_by(layers: Sequence[Mapping[str, Any]], i: int, k: str) -> bool:
    """True if something in a layer above ``i`` hides ``k`` of layer ``i``."""
    parts = k.split("/")
    for above in layers[i + 1:]:
        e = above.get(k)
        if e is not None and not (isinstance(e, ufs.Dir) and not e.opaque and isinstance(layers[i].get(k), ufs.Dir)):
            return True
        for j in range(1, len(parts)):
            p = above.get("/".join(parts[:j]))
            if p is not None and (not isinstance(p, ufs.Dir) or p.opaque):  # a whiteout, file or opaque dir
                return True
    return False


def stack(layers: Sequence[Mapping[str, Any]], names: Sequence[str], fs: Any | None = None,
          paths: Sequence[str] | None = None, title: str = "", labels: Sequence[str] | None = None) -> HTML:
    """An SVG picture of a layer stack: one row per layer (bottom row = layer 0), one column per path.

    A cell shows what that layer holds at that path (file, dir, opaque dir, whiteout,
    symlink); a faded cell is hidden by a layer above it. With ``fs`` (the merged view of
    exactly these layers) a top row shows what a process sees and from which layer
    (``labels[i]``, by default ``L<i>``).
    """
    labels = list(labels) if labels is not None else [f"L{i}" for i in range(len(layers))]
    keys = list(paths) if paths is not None else sorted(
        {k for layer in layers for k in layer if k}, key=lambda k: k.split("/"))
    keys = [k.lstrip("/") for k in keys]
    longest = max((len(k) for k in keys), default=4)
    cw, ch, left, top = 62, 26, 150, 24 + int(4.6 * longest)
    rows = len(layers) + (1 if fs is not None else 0)
    width = max(left + cw * len(keys) + 10 + int(4.6 * longest), 640)
    height = top + (ch + 4) * rows + 30 + (10 if fs is not None else 0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="Helvetica,Arial,sans-serif" font-size="11">']
    if title:
        out.append(f'<text x="4" y="14" font-weight="bold" font-size="12">{html.escape(title)}</text>')
    for j, k in enumerate(keys):
        x = left + j * cw + cw // 2
        out.append(f'<text x="{x}" y="{top - 4}" transform="rotate(-45 {x} {top - 4})">/{html.escape(k)}</text>')
    y = top
    if fs is not None:
        out.append(f'<text x="4" y="{y + 17}" font-weight="bold">merged view</text>')
        for j, k in enumerate(keys):
            x = left + j * cw
            if fs.lexists("/" + k):
                i = fs.which_layer("/" + k)
                label = labels[i]
                out.append(f'<rect x="{x + 2}" y="{y}" width="{cw - 4}" height="{ch}" rx="4" '
                           'fill="#e8f5e9" stroke="#2e7d32"/>'
                           f'<text x="{x + cw // 2}" y="{y + 17}" text-anchor="middle" fill="#1b5e20">{label}</text>')
            else:
                out.append(f'<text x="{x + cw // 2}" y="{y + 17}" text-anchor="middle" fill="#999">(gone)</text>')
        y += ch + 14
        out.append(f'<line x1="4" x2="{width - 6}" y1="{y - 7}" y2="{y - 7}" stroke="#999" stroke-dasharray="4 3"/>')
    for i in reversed(range(len(layers))):
        layer = layers[i]
        out.append(f'<text x="4" y="{y + 17}">{html.escape(names[i])}</text>')
        out.append(f'<rect x="{left - 4}" y="{y - 2}" width="{cw * len(keys) + 8}" height="{ch + 4}" '
                   'fill="#fafafa" stroke="#ddd"/>')
        for j, k in enumerate(keys):
            e = layer.get(k)
            if e is None:
                continue
            kd = kind(e)
            x = left + j * cw
            faded = ' opacity="0.3"' if _hidden_by(layers, i, k) else ""
            out.append(f'<g{faded}><rect x="{x + 2}" y="{y}" width="{cw - 4}" height="{ch}" rx="4" '
                       f'fill="{_FILL.get(kd, "#999")}"/>'
                       f'<text x="{x + cw // 2}" y="{y + 17}" text-anchor="middle" fill="{_TEXT.get(kd, "white")}">'
                       f'{_LABEL.get(kd, kd)}</text></g>')
        y += ch + 4
    x = 4
    for kd in ("file", "dir", "opaque dir", "whiteout", "symlink"):
        text = kd
        out.append(f'<rect x="{x}" y="{y + 8}" width="12" height="12" rx="2" fill="{_FILL[kd]}" stroke="#999"/>'
                   f'<text x="{x + 16}" y="{y + 18}">{text}</text>')
        x += 24 + 7 * len(text)
    out.append(f'<text x="{x + 8}" y="{y + 18}" fill="#777">faded = hidden by a layer above</text>')
    out.append("</svg>")
    text = f"<stack of {len(layers)} layers, {len(keys)} paths>"
    return HTML("".join(out), text)


def image_stack(image: ufs.Image, names: Sequence[str] | None = None, paths: Sequence[str] | None = None,
                title: str = "") -> HTML:
    """:func:`stack` of an image's layers, with its merged view on top."""
    names = list(names) if names is not None else [f"L{i} {short(x.digest, 8)}" for i, x in enumerate(image.layers)]
    return stack(image.layers, names, image.fs, paths, title)


def container_stack(c: ufs.Container, names: Sequence[str] | None = None, paths: Sequence[str] | None = None,
                    title: str = "") -> HTML:
    """:func:`stack` of a container: the image's layers, its upper layer on top, and the merged view."""
    img = c.image
    names = list(names) if names is not None else [f"L{i} {short(x.digest, 8)}" for i, x in enumerate(img.layers)]
    labels = [f"L{i}" for i in range(len(img.layers))] + ["upper"]
    return stack([*img.layers, c.upper], [*names, "upper (container)"], c.fs, paths, title, labels)


# --- build cache ----------------------------------------------------------------------------

_VERDICT = {True: ("hit", "#d7f0d9"), False: ("built", "#f9d3d3"), None: ("-", "#f3f3f3")}


def cache_grid(builds: Mapping[str, Sequence[Any]], caption: str | None = None) -> HTML:
    """A table of cache verdicts: one row per instruction, one column per build.

    ``builds`` maps a build's label to its ``BuildResult.steps`` (all of one Dockerfile):
    a cell is "hit" (green), "built" (red, with the reason on hover) or "-" (no verdict:
    the step only sets metadata, or FROM).
    """
    labels = list(builds)
    first = builds[labels[0]]
    parts = []
    if caption:
        parts.append(f'<div style="font-weight:bold;font-size:12px;margin-top:4px">{html.escape(caption)}</div>')
    parts.append(f'<table style="{_TABLE_STYLE}"><tr><th style="{_CELL};background:#f3f3f3">instruction</th>')
    parts += [f'<th style="{_CELL};background:#f3f3f3">{html.escape(x)}</th>' for x in labels]
    parts.append("</tr>")
    lines = [["instruction", *labels]]
    for i, step in enumerate(first):
        parts.append(f'<tr><td style="{_CELL}">{html.escape(step.instruction)}</td>')
        row = [step.instruction]
        for label in labels:
            s = builds[label][i]
            word, colour = _VERDICT[s.cached]
            tip = f' title="{html.escape(s.reason)}"' if s.reason else ""
            parts.append(f'<td style="{_CELL};background:{colour};text-align:center"{tip}>{word}</td>')
            row.append(word)
        parts.append("</tr>")
        lines.append(row)
    parts.append("</table>")
    widths = [max(len(r[j]) for r in lines) for j in range(len(lines[0]))]
    text = "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in lines)
    return HTML("".join(parts), ((caption + "\n") if caption else "") + text)
