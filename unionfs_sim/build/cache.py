"""The build cache: keys under either rule set, cache records, and why a key missed.

A key is the sha256 of the *key material* each builder compares (classic: the parent
image id and the whole container config with the step's command, ``image/cache/compare.go``;
BuildKit: the LLB op with its inputs' keys, content-based for copy sources). Under classic
rules the cache is the daemon's image store itself: a record is the intermediate image a
step committed (:attr:`Record.image`), found again as the child of the same parent with
the same config (moby ``image/cache/cache.go`` ``getLocalCachedImage``). Beside the
key every record keeps *components*, the named inputs a person would recognise (``ENV
PATH``, ``file app/x.py``, ``ARG V``), used only to say which input differs from the
closest record when a key misses.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..image import History
from ..layer import Layer


def key_of(material: Any) -> str:
    """sha256 of a JSON rendering of ``material`` (sorted keys, so dicts compare as sets)."""
    return "sha256:" + hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@attrs.frozen
class Record:
    """One cached step: its key, its parent, its named inputs and what it produced."""

    key: str
    parent: str
    kind: str
    components: tuple[tuple[str, str], ...]
    layer: Layer | None
    history: History
    config: str
    """The config JSON after the step (classic rules keep it as the cached image's)."""
    image: str = ""
    """Classic rules: the id of the intermediate image the step committed ("" under BuildKit's)."""


class Cache:
    """Records by key and by parent, for one rule set."""

    def __init__(self) -> None:
        """An empty cache."""
        self.records: dict[str, Record] = {}
        self.by_parent: dict[str, list[Record]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: str) -> Record | None:
        """The record of ``key``, or None."""
        return self.records.get(key)

    def put(self, rec: Record) -> None:
        """Store ``rec`` (the newest record of a key wins, as Docker's newest image does)."""
        if rec.key not in self.records:
            self.by_parent.setdefault(rec.parent, []).append(rec)
        self.records[rec.key] = rec

    def has_parent(self, parent: str) -> bool:
        """Whether any record was built on ``parent``."""
        return parent in self.by_parent

    def closest(self, parent: str, kind: str, components: Sequence[tuple[str, str]]) -> Record | None:
        """The record on ``parent`` of the same kind sharing the most components with ``components``."""
        mine = dict(components)
        best: tuple[int, int, Record] | None = None
        for i, rec in enumerate(self.by_parent.get(parent, ())):
            same = sum(1 for k, v in rec.components if mine.get(k) == v) + (1000 if rec.kind == kind else 0)
            if best is None or (same, i) > best[:2]:
                best = (same, i, rec)
        return best[2] if best else None


def _file_fields(v: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in v.split(";") if "=" in part)


def describe_difference(now: Sequence[tuple[str, str]], then: Sequence[tuple[str, str]],
                        lines: Mapping[str, int]) -> str:
    """The first input of ``now`` that differs from ``then``, in words."""
    old = dict(then)
    new = dict(now)
    for label, value in now:
        if old.get(label) == value:
            continue
        at = f" at line {lines[label]}" if label in lines else ""
        if label.startswith("file "):
            if label not in old:
                return f"{label} added"
            a, b = _file_fields(old[label]), _file_fields(value)
            what = [k for k in ("type", "content", "size", "mode", "owner", "link", "xattrs") if a.get(k) != b.get(k)]
            return f"{label} changed: {', '.join(what) or 'metadata'}"
        if label == "command":
            return f"command changed (was: {old.get(label, '')})" if label in old else "command changed"
        if label.startswith("ARG "):
            return f"{label} changed"
        if label.startswith(("ENV ", "LABEL ")) and label not in old:
            return f"{label} added{at}"
        if label == "instruction":
            return f"instruction changed (was: {old.get(label, '')})"
        return f"{label} changed{at}"
    for label in old:
        if label not in new:
            if label.startswith("file "):
                return f"{label} removed"
            return f"{label} removed"
    return "the cache key changed"


__all__ = ["Cache", "Record", "describe_difference", "key_of"]
