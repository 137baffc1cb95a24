"""The build context: the files a build may COPY, ``.dockerignore``, and their hashes.

A context is a directory on disk (or a mapping of paths to nodes). Owners are forced
to 0:0 as the docker CLI sends them (``ChownOpts{0,0}`` for the classic builder,
``resetUIDAndGID`` for BuildKit). Hashes:

- classic: moby ``pkg/tarsum`` v1 per entry, sha256 of ``name mode uid gid size typeflag
  linkname uname gname devmajor devminor`` (uname/gname always empty, no mtime) plus the
  content, where ``mode`` carries the file-type bits (``fillGo18FileTypeBits``) and a
  directory's name ends in ``/``; a directory source is ``dir:`` + sha256 of its sorted
  entry sums joined by ``,`` (``builder/dockerfile/copy.go`` walkSource/hashStringSlice).
- BuildKit: a content checksum of the selected paths (``cache/contenthash``): names below
  the selection, mode, owner, type, link target and content; never the mtime.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping

import attrs

from ..nodes import Dir, Entry, File, Hardlink, Symlink

_S_IFMT = {"f": 0o100000, "d": 0o040000, "l": 0o120000}
_TYPEFLAG = {"f": "0", "d": "5", "l": "2"}


class ContextError(ValueError):
    """A context path that is missing, excluded, or climbs out of the context."""


@attrs.frozen
class Source:
    """One entry of a build context (or of a stage's filesystem used as a COPY source)."""

    path: str
    """Relative to the context root, ``/``-separated, no leading ``/`` (``app/x.py``)."""
    kind: str
    """``f`` regular file, ``d`` directory, ``l`` symlink."""
    mode: int
    """Permission bits (``0o7777``)."""
    size: int = 0
    linkname: str = ""
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    xattrs: tuple[tuple[str, bytes], ...] = ()
    data: Callable[[], bytes] = attrs.field(default=lambda: b"", eq=False, repr=False)


def tarsum_v1(src: Source, name: str | None = None, *, names: bool = False, data: bytes | None = None) -> str:
    """moby's tarsum v1 of one entry (hex sha256): the classic builder's per-file hash.

    ``names``: fill uname/gname as Go's ``tar.FileInfoHeader`` does for a file on the
    daemon's disk (a ``COPY --from`` source: ``remotecontext/filehash.go``); only root
    (0) is assumed to have a name there. Context entries come from a tar stream whose
    names tarsum blanks.
    """
    n = src.path if name is None else name
    if src.kind == "d" and not n.endswith("/"):
        n += "/"
    size = src.size if src.kind == "f" else 0
    head = (f"name{n}mode{src.mode | _S_IFMT[src.kind]}uid{src.uid}gid{src.gid}size{size}"
            f"typeflag{_TYPEFLAG[src.kind]}linkname{src.linkname}"
            f"uname{'root' if names and src.uid == 0 else ''}gname{'root' if names and src.gid == 0 else ''}"
            "devmajor0devminor0")
    h = hashlib.sha256(head.encode())
    for k, v in sorted(src.xattrs):
        h.update(k.encode() + v)
    if src.kind == "f" and src.size:
        h.update(src.data() if data is None else data)
    return h.hexdigest()


# --- .dockerignore (moby pkg/fileutils, docker/cli's dockerignore.ReadAll) --------------

@attrs.frozen
class IgnorePattern:
    """One line of ``.dockerignore``, cleaned as Docker cleans it."""

    text: str
    exclusion: bool
    regex: re.Pattern[str] = attrs.field(eq=False, repr=False)
    depth: int = 0


def _compile(pattern: str) -> re.Pattern[str]:
    out = "^"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < len(pattern) and pattern[i] == "*":
                i += 1
                if i < len(pattern) and pattern[i] == "/":
                    i += 1
                out += ".*" if i >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch in ".$+()^{}|":
            out += "\\" + ch
        elif ch == "\\":
            if i < len(pattern):
                out += re.escape(pattern[i])
                i += 1
            else:
                out += "\\\\"
        else:
            out += ch
    return re.compile(out + "$")


def read_dockerignore(text: str) -> list[IgnorePattern]:
    """The patterns of a ``.dockerignore`` file (comments, ``!`` exceptions, cleaned paths)."""
    out: list[IgnorePattern] = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        p = line.strip()
        if not p:
            continue
        excl = p.startswith("!")
        if excl:
            p = p[1:].strip()
        if p:
            p = os.path.normpath(p)
            if len(p) > 1 and p.startswith("/"):
                p = p.lstrip("/")
        out.append(IgnorePattern(p, excl, _compile(p), len(p.split("/"))))
    return out


def ignored(path: str, patterns: list[IgnorePattern]) -> bool:
    """Whether ``path`` is excluded: the last matching pattern (or parent match) decides."""
    matched = False
    parts = path.split("/")
    for p in patterns:
        m = bool(p.regex.match(path))
        if not m and len(parts) > 1 and p.depth <= len(parts) - 1:
            m = bool(p.regex.match("/".join(parts[:p.depth])))
        if m:
            matched = not p.exclusion
    return matched


def glob_match(pattern: str, path: str) -> bool:
    """Go's ``filepath.Match`` as COPY/ADD use it on context paths (``*`` stops at ``/``)."""
    return bool(_compile(pattern.replace("**", "*")).match(path))


def has_glob(p: str) -> bool:
    """Whether a COPY source has wildcards (copy.go containsWildcards)."""
    i = 0
    while i < len(p):
        if p[i] == "\\":
            i += 2
            continue
        if p[i] in "*?[":
            return True
        i += 1
    return False


# --- the context itself ----------------------------------------------------------------

class Context:
    """A build context: its entries after ``.dockerignore``, with cached hashes."""

    def __init__(self, entries: Mapping[str, Source], ignore: list[IgnorePattern] | None = None,
                 root: str | None = None) -> None:
        """Prefer :meth:`from_directory` or :meth:`from_dict`."""
        self.entries: dict[str, Source] = dict(entries)
        self.ignore = ignore or []
        self.root = root
        self._sums: dict[str, str] = {}
        self._digests: dict[str, str] = {}

    @classmethod
    def from_directory(cls, root: str | os.PathLike[str],
                       progress: Callable[[int, int], None] | None = None) -> Context:
        """Read the directory ``root`` (symlinks kept as links), applying its ``.dockerignore``."""
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise ContextError(f"build context {root!r} is not a directory")
        ign_path = os.path.join(root, ".dockerignore")
        patterns: list[IgnorePattern] = []
        if os.path.isfile(ign_path):
            with open(ign_path, encoding="utf-8") as f:
                patterns = read_dockerignore(f.read())
        entries: dict[str, Source] = {}
        done = 0
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/")
            for name in sorted(dirnames + filenames):
                rel = f"{rel_dir}/{name}" if rel_dir else name
                full = os.path.join(dirpath, name)
                st = os.lstat(full)
                if ignored(rel, patterns):
                    continue
                entries[rel] = _source_of(rel, full, st)
                done += 1
                if progress is not None:
                    progress(done, st.st_size)
        return cls(entries, patterns, root)

    @classmethod
    def from_dict(cls, spec: Mapping[str, bytes | str | Entry]) -> Context:
        """A context from ``{"path": bytes | str | File | Dir | Symlink}`` (``.dockerignore`` applies)."""
        raw: dict[str, Source] = {}
        for k, v in spec.items():
            path = k.strip("/")
            if isinstance(v, str):
                v = v.encode()
            if isinstance(v, bytes):
                v = File(v)
            raw[path] = _source_of_node(path, v)
            parent = path.rpartition("/")[0]
            while parent and parent not in raw:
                raw[parent] = Source(parent, "d", 0o755)
                parent = parent.rpartition("/")[0]
        patterns: list[IgnorePattern] = []
        if ".dockerignore" in raw:
            patterns = read_dockerignore(raw[".dockerignore"].data().decode())
        return cls({k: v for k, v in sorted(raw.items()) if not ignored(k, patterns)}, patterns)

    def __contains__(self, path: object) -> bool:
        return path in self.entries

    def get(self, path: str) -> Source | None:
        """The entry at ``path`` (relative), or None."""
        return self.entries.get(path)

    def below(self, path: str) -> Iterator[Source]:
        """Every entry strictly below directory ``path`` ("" for the root), in path order."""
        pre = path + "/" if path else ""
        for k in sorted(self.entries):
            if k.startswith(pre) and k != path:
                yield self.entries[k]

    def tarsum(self, path: str) -> str:
        """The classic builder's hash of one entry."""
        s = self._sums.get(path)
        if s is None:
            self._hash(path)
            s = self._sums[path]
        return s

    def digest(self, path: str) -> str:
        """sha256 (hex) of one entry's content ("" for a directory or symlink)."""
        d = self._digests.get(path)
        if d is None:
            self._hash(path)
            d = self._digests[path]
        return d

    def _hash(self, path: str) -> None:
        e = self.entries[path]
        data = e.data() if e.kind == "f" else b""
        self._sums[path] = tarsum_v1(e, data=data)
        self._digests[path] = hashlib.sha256(data).hexdigest() if e.kind == "f" else ""

    def prehash(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Hash every file now (one read each), calling ``progress(bytes_done, bytes_total)``."""
        total = sum(e.size for e in self.entries.values() if e.kind == "f")
        done = 0
        for path, e in self.entries.items():
            if path not in self._sums:
                self._hash(path)
            done += e.size if e.kind == "f" else 0
            if progress is not None:
                progress(done, total)


def _source_of(rel: str, full: str, st: os.stat_result) -> Source:
    perm = stat.S_IMODE(st.st_mode)
    xattrs: tuple[tuple[str, bytes], ...] = ()
    try:
        cap = os.getxattr(full, "security.capability", follow_symlinks=False)
        xattrs = (("security.capability", cap),)
    except OSError:
        pass
    if stat.S_ISLNK(st.st_mode):
        return Source(rel, "l", perm, 0, os.readlink(full), mtime_ns=st.st_mtime_ns, xattrs=xattrs)
    if stat.S_ISDIR(st.st_mode):
        return Source(rel, "d", perm, mtime_ns=st.st_mtime_ns, xattrs=xattrs)
    if stat.S_ISREG(st.st_mode):
        def read(full: str = full) -> bytes:
            with open(full, "rb") as f:
                return f.read()
        return Source(rel, "f", perm, st.st_size, mtime_ns=st.st_mtime_ns, xattrs=xattrs, data=read)
    raise ContextError(f"context entry {rel!r} is not a file, directory or symlink (mode {st.st_mode:o})")


def _source_of_node(path: str, v: Entry | Hardlink) -> Source:
    if isinstance(v, File):
        data = v.data  # bytes, or a DiskBytes (a lazily read lower file): bytes() reads it
        return Source(path, "f", v.mode, len(data), uid=0, gid=0, mtime_ns=v.mtime_ns, data=lambda: bytes(data))
    if isinstance(v, Dir):
        return Source(path, "d", v.mode, mtime_ns=v.mtime_ns)
    if isinstance(v, Symlink):
        return Source(path, "l", 0o777, 0, v.target, mtime_ns=v.mtime_ns)
    raise ContextError(f"context entry {path!r}: only files, directories and symlinks can be in a context")


def content_key(sources: list[tuple[str, Source]], digest: Callable[[Source], str]) -> str:
    """BuildKit's content checksum of a selection: (name in selection, entry) pairs, no mtime.

    ``digest`` gives an entry's content sha256 (cached by the tree it comes from).
    """
    h = hashlib.sha256()
    for name, s in sources:
        h.update(f"{name}\0{s.kind}\0{s.mode:o}\0{s.uid}:{s.gid}\0{s.linkname}\0{s.size}\0".encode())
        for k, v in sorted(s.xattrs):
            h.update(k.encode() + b"=" + v + b"\0")
        if s.kind == "f":
            h.update(digest(s).encode())
    return "sha256:" + h.hexdigest()


__all__ = ["Context", "ContextError", "IgnorePattern", "Source", "content_key", "glob_match", "has_glob",
           "ignored", "read_dockerignore", "tarsum_v1"]
