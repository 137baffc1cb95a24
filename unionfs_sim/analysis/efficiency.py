"""Layer efficiency: how many bytes an image carries that its merged filesystem does not show.

Two methods:

- ``"reclaimable"`` (the default) counts what squashing the image into one layer would
  really save, in file-content bytes (each hard-link group once per layer, as a layer's
  tar size counts them): every copy of a file that no longer shows in the merged view
  because a later layer overwrote it, deleted it (a whiteout of it or of a directory
  above it), hid it under an opaque directory, or replaced a directory above it. The
  copy that stays is not waste; a hard-link group that still shows under one of its
  names is not waste; a chmod/chown-only change that copied a whole file up counts the
  lower copy; the same layer stacked twice counts its lower copy. Whiteouts that hide
  nothing are reported (0 bytes). ``score`` is the squashed size over the stored size.
- ``"dive"`` reproduces dive 0.13's numbers exactly (see :mod:`._dive` for what dive
  does and where it is wrong), so a CI gate moved from dive keeps its thresholds.

Both give ``reclaimable_bytes`` (the true saving) next to their own ``wasted_bytes``.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal

import attrs

from ..layer import Layer
from ..lower import Lower
from ..nodes import Dir, File, Whiteout
from ..paths import parents
from . import _dive, _forked
from .scan import ImageLike, gc_paused, same_content
from .sizes import content_size

Method = Literal["reclaimable", "dive"]
METHODS: tuple[Method, ...] = ("reclaimable", "dive")


@attrs.frozen
class Finding:
    """Bytes at one path that the image stores but does not show.

    ``layers``: indexes (bottom = 0) of the layers with an entry at the path (the copies,
    and the layer that overwrote, deleted or hid them); ``steps``: their ``created_by``;
    ``kind``: why (``overwritten``, ``metadata-only``, ``duplicate``, ``deleted``,
    ``opaque``, ``replaced``, ``whiteout-hides-nothing``; ``dive`` for dive's list).
    """

    path: str
    count: int
    bytes: int
    layers: tuple[int, ...]
    steps: tuple[str, ...]
    kind: str

    def to_json(self) -> dict[str, Any]:
        """The finding as a JSON object."""
        return {"path": self.path, "count": self.count, "bytes": self.bytes, "layers": list(self.layers),
                "steps": list(self.steps), "kind": self.kind}


@attrs.frozen
class LayerUse:
    """One layer's share: its size and the bytes of it the merged view does not show."""

    index: int
    digest: str
    created_by: str
    size: int
    wasted_bytes: int


@attrs.frozen
class Efficiency:
    """The result of :func:`efficiency` (see the module docs for the two methods)."""

    method: str
    score: float
    wasted_bytes: int
    user_wasted_percent: float
    reclaimable_bytes: int
    size_bytes: int
    user_size_bytes: int
    findings: tuple[Finding, ...]
    layers: tuple[LayerUse, ...]

    @property
    def files(self) -> list[tuple[str, int, int]]:
        """``(path, count, bytes)`` of each finding, largest first (dive's "Inefficient Files")."""
        return [(f.path, f.count, f.bytes) for f in self.findings]

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON object (NaN/inf percentages as null)."""
        pct = self.user_wasted_percent
        return {
            "method": self.method, "score": self.score, "wasted_bytes": self.wasted_bytes,
            "user_wasted_percent": pct if math.isfinite(pct) else None,
            "reclaimable_bytes": self.reclaimable_bytes, "size_bytes": self.size_bytes,
            "user_size_bytes": self.user_size_bytes, "findings": [f.to_json() for f in self.findings],
            "layers": [attrs.asdict(x) for x in self.layers],
        }

    def _repr_html_(self) -> str:
        """Score, wasted bytes, the layers with their wasted share, and the findings."""
        return efficiency_html(self)

    def plot(self, ax: Any = None) -> Any:
        """Each layer's shown and not-shown bytes as a matplotlib chart (see :func:`layer_chart`)."""
        return layer_chart(self, ax)


def steps_of(image: ImageLike) -> list[str]:
    """The ``created_by`` of the history step that made each layer (bottom first)."""
    return [h.created_by or "" for h in image.history if not h.empty_layer]


def efficiency(image: ImageLike, method: Method = "reclaimable") -> Efficiency:
    """How efficiently ``image`` stores its files (see the module docs).

    Raises:
        ValueError: an unknown ``method``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (choose one of: {', '.join(METHODS)})")
    layers = image.layers
    steps = steps_of(image)
    with gc_paused():
        # dive's trees and the reclaimable walk do not depend on each other: where the
        # walk is still to do and a second CPU is free, dive's runs in a forked child.
        helper = None
        if method == "dive" and _cached(image, steps) is None and _forked.available() and _worth_forking(layers):
            helper = _forked.Forked(lambda: _dive.analyze(layers))
        with helper or contextlib.nullcontext():
            sizes, dead, findings = _shared(image, steps)
            d = helper.result() if helper else None
        if d is None and method == "dive":
            d = _dive.analyze(layers)
    reclaimable = sum(dead)
    total = sum(sizes)
    user = total - (sizes[0] if sizes else 0)
    uses = tuple(LayerUse(i, d, steps[i], sizes[i], dead[i]) for i, d in enumerate(image.diff_ids))
    if d is not None:
        dive_findings = tuple(Finding(f.path, len(f.layers), f.cumulative_size, f.layers,
                                      tuple(steps[i] for i in f.layers), "dive") for f in d.inefficiencies)
        return Efficiency("dive", d.efficiency, d.wasted_bytes, d.wasted_user_percent, reclaimable,
                          d.size_bytes, d.user_size_bytes, dive_findings, uses)
    score = 1.0 if total == 0 else (total - reclaimable) / total
    return Efficiency("reclaimable", score, reclaimable, reclaimable / user if user else 0.0, reclaimable,
                      total, user, findings, uses)


_Shared = tuple[list[int], list[int], tuple["Finding", ...]]
_SHARED: dict[tuple[tuple[int, ...], tuple[str, ...]], tuple[list[weakref.ref[Layer]], _Shared]] = {}
"""What both methods compute (layer sizes, dead bytes, findings) for the last few stacks
(by the identity of their layers, which never change) and history steps: asking for both
methods walks the stack once."""
_SHARED_MAX = 4


_FORK_MIN_ENTRIES = 4000
"""From this many entries in all layers, dive's analysis is worth a forked child (see :mod:`._forked`)."""


def _worth_forking(layers: Sequence[Layer]) -> bool:
    return sum(map(len, layers)) >= _FORK_MIN_ENTRIES


def _cached(image: ImageLike, steps: Sequence[str]) -> _Shared | None:
    """What :func:`_shared` computed for this stack and these steps, if it still has it."""
    layers = image.layers
    hit = _SHARED.get((tuple(map(id, layers)), tuple(steps)))
    if hit is not None and all(r() is x for r, x in zip(hit[0], layers, strict=True)):
        sizes, dead, findings = hit[1]
        return list(sizes), list(dead), findings
    return None


def _shared(image: ImageLike, steps: Sequence[str]) -> _Shared:
    """Each layer's content size, its dead bytes, and the reclaimable findings (cached, see :data:`_SHARED`)."""
    hit = _cached(image, steps)
    if hit is not None:
        return hit
    layers = image.layers
    key = (tuple(map(id, layers)), tuple(steps))
    dead, findings = _reclaimable(layers, lambda: image.lower, steps)
    got = ([content_size(x) for x in layers], dead, findings)
    while len(_SHARED) >= _SHARED_MAX:
        _SHARED.pop(next(iter(_SHARED), key), None)  # the oldest (pop, not del: another thread may be here too)
    _SHARED[key] = ([weakref.ref(x) for x in layers], got)
    return list(got[0]), list(dead), findings


def _cause(layers: Sequence[Layer], i: int, k: str, node: File) -> tuple[int, str]:
    """The first layer above ``i`` that hides ``k``, and how."""
    anc = parents(k)
    for j in range(i + 1, len(layers)):
        x = layers[j]
        e = x.get(k)
        if e is not None:
            if isinstance(e, Whiteout):
                return j, "deleted"
            if isinstance(e, File) and same_content(e, node):
                same_meta = (e.mode, e.uid, e.gid, e.xattrs) == (node.mode, node.uid, node.gid, node.xattrs)
                return j, "duplicate" if same_meta else "metadata-only"
            return j, "overwritten"
        for a in anc:
            e = x.get(a)
            if e is None:
                continue
            if isinstance(e, Whiteout):
                return j, "deleted"
            if isinstance(e, Dir):
                if e.opaque or e.redirect is not None:
                    return j, "opaque"
                continue
            return j, "replaced"
    return len(layers), "hidden"


def _whiteouts_hiding_nothing(layers: Sequence[Layer]) -> list[tuple[int, str]]:
    """``(layer, key)`` of each whiteout with nothing at its path in the layers below.

    One pass over the stack keeping only which paths exist (a whiteout deletes a subtree,
    an opaque directory empties one, a non-directory replaces one), so the check costs
    one walk of the entries, not a flattening of every prefix of the stack.
    """
    present: set[str] = {""}
    kids: dict[str, set[str]] = {}
    out: list[tuple[int, str]] = []

    def drop_below(k: str, keep: bool) -> None:
        stack = [k]
        while stack:
            p = stack.pop()
            if p != k or not keep:
                present.discard(p)
            stack.extend(kids.pop(p, ()))
        if not keep and k:
            kids.get(k.rpartition("/")[0] if "/" in k else "", set()).discard(k)

    def add(k: str) -> None:
        parent = k.rpartition("/")[0] if "/" in k else ""
        if parent not in present:
            add(parent)
        present.add(k)
        kids.setdefault(parent, set()).add(k)

    for j, layer in enumerate(layers):
        # Plain string order puts every directory before what is below it (a key is a
        # prefix of its children's), which is all this walk needs of the order.
        for k, e in sorted(layer.items(), key=itemgetter(0)):
            if isinstance(e, Whiteout):
                if k in present:
                    drop_below(k, keep=False)
                else:
                    out.append((j, k))
                continue
            if not k:
                continue
            # (a key not present has nothing below it: every key in ``kids`` is present)
            if k in present and (not isinstance(e, Dir) or e.opaque or e.redirect is not None):
                drop_below(k, keep=isinstance(e, Dir))
            add(k)
    return out


def _below_cut(d: str, cut: set[str], hidden: dict[str, bool]) -> bool:
    """True if directory ``d`` or one above it is in ``cut`` (``hidden`` remembers the answers)."""
    walk = []
    while d not in hidden:
        if d in cut:
            hidden[d] = True
            break
        walk.append(d)
        d = d.rpartition("/")[0]
    got = hidden[d]
    for w in walk:
        hidden[w] = got
    return got


def _shown_files(layers: Sequence[Layer]) -> list[set[str]] | None:
    """The keys of each layer's files that the merged view shows (as :class:`Lower` has it).

    One walk from the top layer down: a file shows unless a layer above has an entry at
    its key (or a directory it implies there), or hides a directory above it (a whiteout,
    a non-directory, an opaque directory). Cheaper than flattening the stack into a
    :class:`Lower`, which the analysis needs nothing else of. None if a directory has a
    ``redirect`` (it brings lower entries to a new place: the Lower works that out).
    """
    covered: set[str] = set()  # keys with an entry, or a directory implied by one, in the layers seen so far
    cut: set[str] = set()  # keys below which those layers hide everything
    out: list[set[str]] = []
    for layer in reversed(layers):
        shown: set[str] = set()
        hidden: dict[str, bool] = {"": False}  # directory key -> below a cut
        for k, e in layer.items():
            if isinstance(e, File) and k not in covered and not (cut and _below_cut(k.rpartition("/")[0], cut, hidden)):
                shown.add(k)
        for k, e in layer.items():
            if isinstance(e, Dir):
                if e.redirect is not None or (not k and e.opaque):
                    return None
                if e.opaque:
                    cut.add(k)
            else:
                cut.add(k)  # a whiteout, or a non-directory replacing whatever was there
            while k not in covered:
                covered.add(k)
                if not k:
                    break
                k = k.rpartition("/")[0]
        out.append(shown)
    out.reverse()
    return out


def _reclaimable(layers: Sequence[Layer], lower: Callable[[], Lower],
                 steps: Sequence[str]) -> tuple[list[int], tuple[Finding, ...]]:
    """Dead bytes per layer, and the findings (grouped by path)."""
    dead = [0] * len(layers)
    by_path: dict[str, tuple[list[int], int, list[str]]] = {}

    def note(path: str, idxs: Sequence[int], nbytes: int, kind: str) -> None:
        got = by_path.get(path)
        if got is None:
            got = by_path[path] = ([], 0, [])
        ls, b, kinds = got
        ls.extend(i for i in idxs if i not in ls)
        if kind not in kinds:
            kinds.append(kind)
        by_path[path] = (ls, b + nbytes, kinds)

    shown = _shown_files(layers)
    if shown is None:
        nodes, where = lower().nodes, lower().where
        shown = [{k for k, e in x.items() if where.get(k) == i and nodes.get(k) is e} for i, x in enumerate(layers)]
    for i, layer in enumerate(layers):
        # The files of the layer that do not show, by hard-link group (named by its first
        # name in canonical order), unless another name of the group shows.
        alive = shown[i]
        shows: set[int] = set()
        groups: dict[int, tuple[str, File]] = {}
        for k, e in layer.items():
            if k in alive:
                shows.add(id(e))
            elif isinstance(e, File):
                g = groups.get(id(e))
                if g is None or k.split("/") < g[0].split("/"):
                    groups[id(e)] = (k, e)
        for n, (k, e) in groups.items():
            if n in shows or not e.size:
                continue
            dead[i] += e.size
            j, kind = _cause(layers, i, k, e)
            note("/" + k, [i] + ([j] if j < len(layers) else []), e.size, kind)
    for j, k in _whiteouts_hiding_nothing(layers):
        note("/" + k, [j], 0, "whiteout-hides-nothing")
    findings = []
    for path, (ls, b, kinds) in by_path.items():
        idxs = tuple(sorted(ls))
        findings.append(Finding(path, len(idxs), b, idxs, tuple(steps[i] for i in idxs), "+".join(kinds)))
    findings.sort(key=lambda f: (-f.bytes, f.path))
    return dead, tuple(findings)


# --- dive's CI gate (runtime/ci/rule.go) ---------------------------------------------------

CI_DEFAULTS: Mapping[str, str] = {"lowestEfficiency": "0.9", "highestWastedBytes": "disabled",
                                  "highestUserWastedPercent": "0.1"}
"""dive's rule names and default thresholds (``cmd/root.go``)."""

_SIZES = {"b": 1, "kib": 1 << 10, "kb": 10**3, "mib": 1 << 20, "mb": 10**6, "gib": 1 << 30, "gb": 10**9,
          "tib": 1 << 40, "tb": 10**12, "pib": 1 << 50, "pb": 10**15, "eib": 1 << 60, "eb": 10**18,
          "": 1, "ki": 1 << 10, "k": 10**3, "mi": 1 << 20, "m": 10**6, "gi": 1 << 30, "g": 10**9,
          "ti": 1 << 40, "t": 10**12, "pi": 1 << 50, "p": 10**15, "ei": 1 << 60, "e": 10**18}


def parse_bytes(text: str) -> int:
    """go-humanize ``ParseBytes``: ``"20MB"``, ``"1.5 GiB"``, ``"1,000"`` -> bytes."""
    s = text.strip()
    n = 0
    while n < len(s) and (s[n].isdigit() or s[n] in ".,"):
        n += 1
    num, unit = s[:n].replace(",", ""), s[n:].strip().lower()
    if unit not in _SIZES:
        raise ValueError(f"unhandled size name: {unit}")
    try:
        f = float(num)
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{num}": invalid syntax') from None
    v = f * _SIZES[unit]
    if v >= 2.0**64:
        raise ValueError(f"too large: {text}")
    return int(v)


def _go_float(x: float) -> str:
    """A float as Go's ``%v`` prints it."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    r = repr(x)
    if "e" in r:
        mant, exp = r.split("e")
        sign = exp[0] if exp[0] in "+-" else "+"
        digits = exp.lstrip("+-").rjust(2, "0")
        return f"{mant}e{sign}{digits}"
    return r[:-2] if r.endswith(".0") and abs(x) < 1e21 else r


def _valid_bytes(value: str) -> int:
    try:
        return parse_bytes(value)
    except ValueError as e:
        raise ValueError(f"invalid config value ('{value}'): {e}") from None


def _unit_float(name: str, value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise ValueError(f"invalid config value ('{value}'): "
                         f"strconv.ParseFloat: parsing \"{value}\": invalid syntax") from None
    if f < 0 or f > 1:
        raise ValueError(f"{name} config value is outside allowed range (0-1), given '{value}'")
    return f


@attrs.frozen
class RuleResult:
    """One CI rule's verdict: ``status`` is PASS, FAIL or SKIP; MISCONFIGURED or CONFIGURED when a rule is wrong."""

    name: str
    status: str
    message: str


@attrs.frozen
class CIResult:
    """dive's CI evaluation: ``passed`` (the exit code is 0 exactly then) and each rule's result."""

    passed: bool
    misconfigured: bool
    rules: tuple[RuleResult, ...]

    @property
    def exit_code(self) -> int:
        """What ``dive --ci`` exits with."""
        return 0 if self.passed else 1

    def to_json(self) -> dict[str, Any]:
        """The verdict as a JSON object."""
        return {"passed": self.passed, "misconfigured": self.misconfigured,
                "rules": [attrs.asdict(r) for r in self.rules]}


def read_ci_config(text: str, where: str = ".dive-ci") -> dict[str, str]:
    """The ``rules:`` of a ``.dive-ci`` file (YAML: ``rules:`` then ``  name: value`` lines)."""
    out: dict[str, str] = {}
    in_rules = False
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line.startswith((" ", "\t")):
            key, sep, rest = line.partition(":")
            if not sep:
                raise ValueError(f"{where}:{n}: expected 'key: value', got {raw!r}")
            in_rules = key.strip() == "rules" and not rest.strip()
            continue
        if not in_rules:
            continue
        key, sep, value = line.strip().partition(":")
        if not sep:
            raise ValueError(f"{where}:{n}: expected 'name: value', got {raw!r}")
        out[key.strip()] = value.strip().strip("'\"")
    return out


def evaluate_ci(result: Efficiency, rules: Mapping[str, str] | None = None) -> CIResult:
    """Apply dive's CI rules (``rules`` over :data:`CI_DEFAULTS`) to ``result``, as ``dive --ci``."""
    config = {**CI_DEFAULTS, **{k: str(v) for k, v in (rules or {}).items() if k in CI_DEFAULTS}}
    checks: dict[str, Callable[[str], tuple[bool, str]]] = {}

    def lowest(value: str) -> tuple[bool, str]:
        t = _unit_float("lowestEfficiency", value)
        if t > result.score:
            return False, (f"image efficiency is too low (efficiency={_go_float(result.score)} "
                           f"< threshold={_go_float(t)})")
        return True, ""

    def wasted(value: str) -> tuple[bool, str]:
        t = _valid_bytes(value)
        if result.wasted_bytes > t:
            return False, f"too many bytes wasted (wasted-bytes={result.wasted_bytes} > threshold={t})"
        return True, ""

    def user(value: str) -> tuple[bool, str]:
        t = _unit_float("highestUserWastedPercent", value)
        if t < result.user_wasted_percent:
            return False, ("too many bytes wasted, relative to the user bytes added "
                           f"(%-user-wasted-bytes={_go_float(result.user_wasted_percent)} > threshold={_go_float(t)})")
        return True, ""

    checks = {"lowestEfficiency": lowest, "highestWastedBytes": wasted, "highestUserWastedPercent": user}
    validate: dict[str, Callable[[str], object]] = {
        "lowestEfficiency": lambda v: _unit_float("lowestEfficiency", v),
        "highestWastedBytes": _valid_bytes,
        "highestUserWastedPercent": lambda v: _unit_float("highestUserWastedPercent", v),
    }
    # dive validates every enabled rule first; if one is wrong it evaluates none
    # (runtime/ci/evaluator.go: the others stay "CONFIGURED", disabled ones too).
    problems: dict[str, str] = {}
    for name in checks:
        if config[name] != "disabled":
            try:
                validate[name](config[name])
            except ValueError as e:
                problems[name] = str(e)
    out: list[RuleResult] = []
    misconfigured = bool(problems)
    for name in sorted(checks):
        value = config[name]
        if misconfigured:
            if name in problems:
                out.append(RuleResult(name, "MISCONFIGURED", problems[name]))
            else:
                out.append(RuleResult(name, "CONFIGURED", "rule disabled" if value == "disabled" else "test"))
            continue
        if value == "disabled":
            out.append(RuleResult(name, "SKIP", "rule disabled"))
            continue
        ok, msg = checks[name](value)
        out.append(RuleResult(name, "PASS" if ok else "FAIL", msg))
    passed = not misconfigured and all(r.status != "FAIL" for r in out)
    return CIResult(passed, misconfigured, tuple(out))


# --- views: HTML for notebooks, a chart through matplotlib (optional) ---------------------


def efficiency_html(e: Efficiency) -> str:
    """Score, wasted bytes, the layers with their wasted share, and the findings."""
    from .._html import human, section, short, table  # here: only notebooks need it (as the core's reprs)

    pct = e.user_wasted_percent
    head = table(["method", "score", "wasted", "user wasted", "reclaimable", "size"],
                 [[e.method, f"{e.score:.4f}", human(e.wasted_bytes),
                   f"{pct * 100:.2f} %" if math.isfinite(pct) else str(pct),
                   human(e.reclaimable_bytes), human(e.size_bytes)]])
    layers = table(["#", "layer", "size", "not shown", "created by"],
                   [[x.index, short(x.digest), human(x.size), human(x.wasted_bytes), x.created_by[:80]]
                    for x in reversed(e.layers)], right=(0, 2, 3))
    files = table(["path", "count", "bytes", "layers", "kind"],
                  [[f.path, f.count, f.bytes, ",".join(map(str, f.layers)), f.kind] for f in e.findings],
                  right=(1, 2), limit=50)
    return section("Efficiency", head, layers, files)


MATPLOTLIB_MISSING = "charts need matplotlib: pip install matplotlib"


def layer_chart(result: Efficiency, ax: Any = None) -> Any:
    """Horizontal bars, one per layer (bottom layer at the bottom): shown and not-shown bytes.

    Returns the matplotlib Axes (a new figure's when ``ax`` is None).

    Raises:
        ImportError: matplotlib is not installed.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError(MATPLOTLIB_MISSING) from e
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.45 * max(len(result.layers), 2) + 1))
    labels = [f"{x.index}: {x.created_by[:40] or x.digest[7:19]}" for x in result.layers]
    shown = [x.size - x.wasted_bytes for x in result.layers]
    wasted = [x.wasted_bytes for x in result.layers]
    ax.barh(labels, shown, color="#4e79a7", label="shown")
    ax.barh(labels, wasted, left=shown, color="#e15759", label="not shown (reclaimable)")
    ax.set_xlabel("bytes")
    ax.set_title(f"score {result.score:.3f}, {result.reclaimable_bytes} bytes reclaimable")
    ax.legend(loc="lower right")
    return ax
