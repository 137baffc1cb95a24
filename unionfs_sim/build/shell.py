"""A POSIX-shell subset for ``isolation="python"``: the file recipes of image builds.

Lists (``&&``, ``||``, ``;``, newlines), quotes, ``$V``/``${V:-x}`` expansion, globs,
redirections (``>``, ``>>``, ``<``, ``2>``, ``2>&1``), variable assignments, and the
builtins image recipes use on files: ``mkdir -p``, ``rm -rf``, ``cp -a``, ``mv``,
``ln -s``, ``chmod``, ``chown``, ``touch``, ``echo``, ``printf``, ``cat``, ``cd``,
``true``, ``false``, ``exit``, ``export``, ``test``/``[``. Anything else raises
:class:`UnsupportedCommand` naming it, never a silent no-op.
"""

from __future__ import annotations

import fnmatch
import io
import posixpath
import re
import stat as _stat
from collections.abc import Callable, Mapping

import attrs

from ..errors import UnsupportedCommand
from ..fs import FileSystem


@attrs.define
class Result:
    """Exit status and output of a script."""

    status: int
    stdout: bytes = b""
    stderr: bytes = b""


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


_OPS = ("&&", "||", ";;", ">>", "2>>", "2>&1", ">&2", "1>&2", "2>", "1>", ">", "<", ";", "|", "&", "(", ")", "\n")


def _tokenize(s: str) -> list[tuple[str, str]]:
    """("w", raw word with quotes kept) and ("op", operator) tokens."""
    toks: list[tuple[str, str]] = []
    i, n = 0, len(s)
    cur: list[str] = []

    def flush() -> None:
        if cur:
            toks.append(("w", "".join(cur)))
            cur.clear()

    while i < n:
        c = s[i]
        if c in " \t":
            flush()
            i += 1
            continue
        if c == "#" and not cur:
            while i < n and s[i] != "\n":
                i += 1
            continue
        if c == "\\":
            if i + 1 < n and s[i + 1] == "\n":
                i += 2
                continue
            cur.append(s[i:i + 2])
            i += 2
            continue
        if c in "'\"":
            j = i + 1
            while j < n and s[j] != c:
                j += 2 if (c == '"' and s[j] == "\\") else 1
            if j >= n:
                raise UnsupportedCommand(f"unterminated {c} quote in {s!r}")
            cur.append(s[i:j + 1])
            i = j + 1
            continue
        if c == "$" and s.startswith("$(", i) or c == "`":
            raise UnsupportedCommand("command substitution ($(...) or `...`) is not in the python shell subset")
        op = next((o for o in _OPS if s.startswith(o, i)), None)
        if op is not None and not (op[0].isdigit() and cur):
            flush()
            toks.append(("op", op))
            i += len(op)
            continue
        cur.append(c)
        i += 1
    flush()
    return toks


def _expand(raw: str, env: Mapping[str, str], status: int) -> list[str]:
    """Quote removal, parameter expansion, field splitting of unquoted expansions, globs."""
    fields: list[list[tuple[str, bool]]] = [[]]   # segments (text, glob-active)
    i, n = 0, len(raw)
    any_quoted = False

    def param(j: int) -> tuple[str, int]:
        if j < n and raw[j] == "{":
            k = raw.index("}", j)
            inner = raw[j + 1:k]
            m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+=?])(.*))?$", inner)
            if not m:
                raise UnsupportedCommand(f"bad substitution ${{{inner}}}")
            name, op, word = m.group(1), m.group(2), m.group(3) or ""
            v = env.get(name)
            if op in (":-", ":="):
                v = v if v else word
            elif op in ("-", "="):
                v = v if v is not None else word
            elif op == ":+":
                v = word if v else ""
            elif op == "+":
                v = word if v is not None else ""
            return v or "", k + 1
        if j < n and raw[j] == "?":
            return str(status), j + 1
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*|[0-9@*#$!-]", raw[j:])
        if not m:
            return "$", j
        return env.get(m.group(0), ""), j + len(m.group(0))

    while i < n:
        c = raw[i]
        if c == "'":
            k = raw.index("'", i + 1)
            fields[-1].append((raw[i + 1:k], False))
            any_quoted = True
            i = k + 1
        elif c == '"':
            any_quoted = True
            i += 1
            buf = []
            while raw[i] != '"':
                if raw[i] == "\\" and raw[i + 1] in '"\\$`\n':
                    buf.append(raw[i + 1])
                    i += 2
                elif raw[i] == "$":
                    v, i = param(i + 1)
                    buf.append(v)
                else:
                    buf.append(raw[i])
                    i += 1
            fields[-1].append(("".join(buf), False))
            i += 1
        elif c == "\\":
            fields[-1].append((raw[i + 1:i + 2], False))
            i += 2
        elif c == "$":
            v, i = param(i + 1)
            parts = v.split()
            if v and v[0].isspace() and fields[-1]:
                fields.append([])
            for pi, p in enumerate(parts):
                if pi:
                    fields.append([])
                fields[-1].append((p, True))
            if v and v[-1].isspace() and parts:
                fields.append([])
        else:
            fields[-1].append((c, True))
            i += 1
    out: list[str] = []
    for f in fields:
        if not f and not any_quoted:
            continue
        out.append("".join(t for t, _ in f))
    return out


def _globbable(raw: str) -> bool:
    return bool(re.search(r"[*?\[]", re.sub(r"'[^']*'|\"[^\"]*\"|\\.", "", raw)))


class Shell:
    """Runs scripts of the subset on a FileSystem (a container's view) as one process would."""

    def __init__(self, fs: FileSystem, env: Mapping[str, str], cwd: str = "/") -> None:
        """``env`` is the process environment; ``cwd`` the working directory (absolute)."""
        self.fs = fs
        self.env = dict(env)
        self.cwd = cwd or "/"
        self.status = 0
        self.out = io.BytesIO()
        self.err = io.BytesIO()

    # --- the language --------------------------------------------------------------

    def run(self, script: str) -> Result:
        """Run ``script``; the exit status and what it printed."""
        toks = _tokenize(script)
        try:
            self._list(toks)
        except _Exit as e:
            self.status = e.status
        return Result(self.status, self.out.getvalue(), self.err.getvalue())

    def _list(self, toks: list[tuple[str, str]]) -> None:
        i = 0
        pending = ""   # the operator before the current command
        while i < len(toks):
            j = i
            while j < len(toks) and not (toks[j][0] == "op" and toks[j][1] in ("&&", "||", ";", "\n")):
                j += 1
            cmd = toks[i:j]
            run = not ((pending == "&&" and self.status != 0) or (pending == "||" and self.status == 0))
            if cmd and run:
                self.status = self._simple(cmd)
            elif not cmd and pending in ("&&", "||"):
                raise UnsupportedCommand("syntax error: a command is missing after " + pending)
            pending = toks[j][1] if j < len(toks) else ""
            if pending in (";", "\n"):
                pending = ""
            i = j + 1

    def _simple(self, toks: list[tuple[str, str]]) -> int:
        words: list[str] = []
        redirs: list[tuple[str, str]] = []
        assigns: list[tuple[str, str]] = []
        k = 0
        while k < len(toks):
            kind, v = toks[k]
            if kind == "op":
                if v in ("|", "&", "(", ")", ";;"):
                    raise UnsupportedCommand(
                        f"'{v}' (pipes, background jobs, subshells) is not in the python shell subset")
                if v in ("2>&1", ">&2", "1>&2"):
                    redirs.append((v, ""))
                    k += 1
                    continue
                if k + 1 >= len(toks) or toks[k + 1][0] != "w":
                    raise UnsupportedCommand(f"syntax error: a file name is missing after {v}")
                target = _expand(toks[k + 1][1], self.env, self.status)
                redirs.append((v, target[0] if target else ""))
                k += 2
                continue
            m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)$", v, re.DOTALL)
            if m and not words:
                val = _expand(m.group(2), self.env, self.status) if m.group(2) else [""]
                assigns.append((m.group(1), " ".join(val)))
            else:
                fields = _expand(v, self.env, self.status)
                if _globbable(v):
                    fields = [g for f in fields for g in (self._glob(f) or [f])]
                words.extend(fields)
            k += 1
        if not words:
            self.env.update(assigns)
            return 0
        out, err = self.out, self.err
        stdin: bytes | None = None
        try:
            for op, path in redirs:
                if op in ("2>&1",):
                    err = out
                elif op in (">&2", "1>&2"):
                    out = err
                elif op == "<":
                    stdin = self.fs.read_bytes(self._abs(path))
                else:
                    sink = _FileSink(self.fs, self._abs(path), append=op.endswith(">>"))
                    if op.startswith("2"):
                        err = sink  # type: ignore[assignment]
                    else:
                        out = sink  # type: ignore[assignment]
        except OSError as e:
            self.err.write(f"sh: {e.filename}: {e.strerror}\n".encode())
            return 1
        saved = dict(self.env)
        self.env.update(assigns)
        try:
            fn = _BUILTINS.get(words[0])
            if fn is None:
                raise UnsupportedCommand(
                    f"`{words[0]}` is not in the python shell subset (it knows {', '.join(sorted(_BUILTINS))}); "
                    "run this step with isolation=\"chroot\"")
            return fn(self, words[1:], out, err, stdin)
        except OSError as e:
            name = e.filename or ""
            err.write(f"{words[0]}: {name}: {e.strerror}\n".encode())
            return 1
        finally:
            if assigns and words[0] not in ("export",):
                for key, _ in assigns:
                    if key in saved:
                        self.env[key] = saved[key]
                    else:
                        self.env.pop(key, None)
            for s in (out, err):
                if isinstance(s, _FileSink):
                    s.close()

    def _abs(self, p: str) -> str:
        return posixpath.normpath(posixpath.join(self.cwd, p)) if p else self.cwd

    def _glob(self, pattern: str) -> list[str]:
        absolute = pattern.startswith("/")
        parts = [p for p in pattern.split("/") if p]
        found = ["/" if absolute else ""]
        for part in parts:
            nxt = []
            for base in found:
                d = self._abs(base or ".")
                if re.search(r"[*?\[]", part):
                    try:
                        names = sorted(self.fs.listdir(d))
                    except OSError:
                        continue
                    nxt += [posixpath.join(base, x) if base else x for x in names
                            if fnmatch.fnmatchcase(x, part) and (not x.startswith(".") or part.startswith("."))]
                else:
                    p = posixpath.join(base, part) if base else part
                    if self.fs.lexists(self._abs(p)):
                        nxt.append(p)
            found = nxt
        return found


class _FileSink(io.RawIOBase):
    def __init__(self, fs: FileSystem, path: str, append: bool) -> None:
        self.f = fs.open(path, "ab" if append else "wb")

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.f.write(b)
        return len(b)

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()
        super().close()


# --- builtins ---------------------------------------------------------------------------

Builtin = Callable[[Shell, list[str], io.RawIOBase | io.BytesIO, io.RawIOBase | io.BytesIO, bytes | None], int]
_BUILTINS: dict[str, Builtin] = {}


def _builtin(*names: str) -> Callable[[Builtin], Builtin]:
    def deco(fn: Builtin) -> Builtin:
        for n in names:
            _BUILTINS[n] = fn
        return fn
    return deco


def _opts(args: list[str], known: str) -> tuple[set[str], list[str]]:
    flags: set[str] = set()
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        if args[i] == "--":
            i += 1
            break
        for ch in args[i][1:]:
            if ch not in known:
                raise UnsupportedCommand(f"option -{ch} is not in the python shell subset")
            flags.add(ch)
        i += 1
    return flags, args[i:]


@_builtin("true", ":")
def _true(sh: Shell, args: list[str], out: object, err: object, stdin: bytes | None) -> int:
    return 0


@_builtin("false")
def _false(sh: Shell, args: list[str], out: object, err: object, stdin: bytes | None) -> int:
    return 1


@_builtin("exit")
def _exit(sh: Shell, args: list[str], out: object, err: object, stdin: bytes | None) -> int:
    raise _Exit(int(args[0]) if args else sh.status)


@_builtin("export")
def _export(sh: Shell, args: list[str], out: object, err: object, stdin: bytes | None) -> int:
    for a in args:
        k, eq, v = a.partition("=")
        if eq:
            sh.env[k] = v
    return 0


@_builtin("set")
def _set(sh: Shell, args: list[str], out: object, err: object, stdin: bytes | None) -> int:
    if any(a not in ("-e", "-x", "-eu", "-ex", "-u", "-o", "pipefail", "-eux") for a in args):
        raise UnsupportedCommand(f"set {' '.join(args)} is not in the python shell subset")
    return 0


@_builtin("cd")
def _cd(sh: Shell, args: list[str], out: object, err: object, stdin: bytes | None) -> int:
    target = sh._abs(args[0] if args else sh.env.get("HOME", "/"))
    if not sh.fs.isdir(target):
        assert isinstance(err, io.IOBase)
        err.write(f"sh: cd: can't cd to {args[0] if args else target}\n".encode())
        return 2
    sh.cwd = target
    return 0


def _c_escapes(s: str) -> str:
    return s.encode().decode("unicode_escape")


@_builtin("echo")
def _echo(sh: Shell, args: list[str], out: io.IOBase, err: object, stdin: bytes | None) -> int:
    newline = True
    if args and args[0] == "-n":
        newline, args = False, args[1:]
    out.write((" ".join(args) + ("\n" if newline else "")).encode())
    return 0


@_builtin("printf")
def _printf(sh: Shell, args: list[str], out: io.IOBase, err: object, stdin: bytes | None) -> int:
    if not args:
        raise UnsupportedCommand("printf: usage: printf FORMAT [ARGUMENT]...")
    fmt, rest = _c_escapes(args[0]), args[1:]
    conv = re.compile(r"%([-+ 0#]*\d*(?:\.\d+)?)([sdcxo%])")
    while True:
        used = 0

        def sub(m: re.Match[str], rest: list[str] = rest) -> str:
            nonlocal used
            if m.group(2) == "%":
                return "%"
            v = rest[used] if used < len(rest) else ""
            used += 1
            if m.group(2) in "dxo":
                return ("%" + m.group(1) + m.group(2)) % int(v or 0)
            if m.group(2) == "c":
                return v[:1]
            return ("%" + m.group(1) + "s") % v
        out.write(conv.sub(sub, fmt).encode())
        if not used or used >= len(rest):
            break
        rest = rest[used:]
    return 0


@_builtin("cat")
def _cat(sh: Shell, args: list[str], out: io.IOBase, err: object, stdin: bytes | None) -> int:
    if not args:
        out.write(stdin or b"")
    out.writelines(stdin or b"" if a == "-" else sh.fs.read_bytes(sh._abs(a)) for a in args)
    return 0


@_builtin("mkdir")
def _mkdir(sh: Shell, args: list[str], out: object, err: object, stdin: bytes | None) -> int:
    mode = None
    if "-m" in args:
        k = args.index("-m")
        mode = int(args[k + 1], 8)
        args = args[:k] + args[k + 2:]
    flags, paths = _opts(args, "pv")
    for p in paths:
        full = sh._abs(p)
        if "p" in flags:
            sh.fs.makedirs(full, exist_ok=True)
        else:
            sh.fs.mkdir(full)
        if mode is not None:
            sh.fs.chmod(full, mode)
    return 0


def _rmtree(fs: FileSystem, p: str) -> None:
    st = fs.lstat(p)
    if _stat.S_ISDIR(st.st_mode):
        for name in fs.listdir(p):
            _rmtree(fs, posixpath.join(p, name))
        fs.rmdir(p)
    else:
        fs.unlink(p)


@_builtin("rm")
def _rm(sh: Shell, args: list[str], out: object, err: io.IOBase, stdin: bytes | None) -> int:
    flags, paths = _opts(args, "rRfv")
    status = 0
    for p in paths:
        full = sh._abs(p)
        if not sh.fs.lexists(full):
            if "f" not in flags:
                err.write(f"rm: can't remove '{p}': No such file or directory\n".encode())
                status = 1
            continue
        if sh.fs.isdir(full) and not sh.fs.islink(full):
            if not flags & {"r", "R"}:
                err.write(f"rm: '{p}' is a directory\n".encode())
                status = 1
                continue
            _rmtree(sh.fs, full)
        else:
            sh.fs.unlink(full)
    return status


def _copy(fs: FileSystem, src: str, dst: str, keep: bool, recursive: bool) -> None:
    st = fs.lstat(src)
    if _stat.S_ISLNK(st.st_mode) and (keep or recursive):
        fs.symlink(fs.readlink(src), dst)
    elif _stat.S_ISDIR(st.st_mode):
        if not recursive:
            raise IsADirectoryError(21, "Is a directory", src)
        if not fs.isdir(dst):
            fs.mkdir(dst, _stat.S_IMODE(st.st_mode))
        for name in sorted(fs.listdir(src)):
            _copy(fs, posixpath.join(src, name), posixpath.join(dst, name), keep, recursive)
    else:
        fs.write_bytes(dst, fs.read_bytes(src))
        if keep:
            fs.chmod(dst, _stat.S_IMODE(st.st_mode))
        else:
            fs.chmod(dst, _stat.S_IMODE(st.st_mode) & ~fs.umask)
    if keep:
        fs.lchown(dst, st.st_uid, st.st_gid)
        if _stat.S_ISDIR(st.st_mode):
            fs.chmod(dst, _stat.S_IMODE(st.st_mode))


@_builtin("cp")
def _cp(sh: Shell, args: list[str], out: object, err: object, stdin: bytes | None) -> int:
    flags, paths = _opts(args, "aRrpfdPL")
    if len(paths) < 2:
        raise UnsupportedCommand("cp: needs a source and a destination")
    *srcs, dst = [sh._abs(p) for p in paths]
    keep = bool(flags & {"a", "p"})
    recursive = bool(flags & {"a", "R", "r"})
    for s in srcs:
        target = posixpath.join(dst, posixpath.basename(s)) if sh.fs.isdir(dst) else dst
        _copy(sh.fs, s, target, keep, recursive)
    return 0


@_builtin("mv")
def _mv(sh: Shell, args: list[str], out: object, err: object, stdin: bytes | None) -> int:
    flags, paths = _opts(args, "f")
    *srcs, dst = [sh._abs(p) for p in paths]
    for s in srcs:
        target = posixpath.join(dst, posixpath.basename(s)) if sh.fs.isdir(dst) else dst
        sh.fs.rename(s, target)
    return 0


@_builtin("ln")
def _ln(sh: Shell, args: list[str], out: object, err: object, stdin: bytes | None) -> int:
    flags, paths = _opts(args, "sfnT")
    if len(paths) != 2:
        raise UnsupportedCommand("ln: the python shell subset takes exactly TARGET LINK_NAME")
    target, link = paths
    full = sh._abs(link)
    if sh.fs.isdir(full) and not ("n" in flags and sh.fs.islink(full)):
        full = posixpath.join(full, posixpath.basename(target))
    if "f" in flags and sh.fs.lexists(full):
        sh.fs.unlink(full)
    if "s" in flags:
        sh.fs.symlink(target, full)
    else:
        sh.fs.link(sh._abs(target), full)
    return 0


def _walk_all(fs: FileSystem, p: str) -> list[str]:
    out = [p]
    if fs.isdir(p) and not fs.islink(p):
        for name in sorted(fs.listdir(p)):
            out += _walk_all(fs, posixpath.join(p, name))
    return out


def _symbolic_mode(spec: str, cur: int, is_dir: bool) -> int:
    if re.fullmatch(r"[0-7]+", spec):
        return int(spec, 8)
    mode = cur
    for clause in spec.split(","):
        m = re.fullmatch(r"([ugoa]*)([-+=])([rwxXst]*)", clause)
        if not m:
            raise UnsupportedCommand(f"chmod: invalid mode {spec!r}")
        who = m.group(1) or "a"
        bits = 0
        for ch in m.group(3):
            for w in ("u", "g", "o") if "a" in who else who:
                shift = {"u": 6, "g": 3, "o": 0}[w]
                if ch == "r":
                    bits |= 4 << shift
                elif ch == "w":
                    bits |= 2 << shift
                elif ch == "x" or (ch == "X" and (is_dir or cur & 0o111)):
                    bits |= 1 << shift
                elif ch == "s":
                    bits |= {"u": 0o4000, "g": 0o2000, "o": 0}[w]
                elif ch == "t":
                    bits |= 0o1000
        if m.group(2) == "+":
            mode |= bits
        elif m.group(2) == "-":
            mode &= ~bits
        else:
            mask = 0
            for w in ("u", "g", "o") if "a" in who else who:
                mask |= 0o7 << {"u": 6, "g": 3, "o": 0}[w]
            mode = (mode & ~mask) | bits
    return mode


@_builtin("chmod")
def _chmod(sh: Shell, args: list[str], out: object, err: object, stdin: bytes | None) -> int:
    flags, rest = _opts(args, "R")
    spec, paths = rest[0], rest[1:]
    for p in paths:
        for q in _walk_all(sh.fs, sh._abs(p)) if "R" in flags else [sh._abs(p)]:
            if sh.fs.islink(q) and q != sh._abs(p):
                continue
            st = sh.fs.stat(q)
            sh.fs.chmod(q, _symbolic_mode(spec, _stat.S_IMODE(st.st_mode), _stat.S_ISDIR(st.st_mode)))
    return 0


def _ids(sh: Shell, spec: str) -> tuple[int, int]:
    user, _, group = spec.partition(":")

    def lookup(name: str, db: str) -> int:
        if name == "":
            return -1
        if name.isdigit():
            return int(name)
        try:
            for line in sh.fs.read_text(db).splitlines():
                f = line.split(":")
                if f and f[0] == name:
                    return int(f[2])
        except OSError:
            pass
        raise UnsupportedCommand(f"chown: unknown {'user' if db.endswith('passwd') else 'group'} {name}")
    return lookup(user, "/etc/passwd"), lookup(group, "/etc/group")


@_builtin("chown")
def _chown(sh: Shell, args: list[str], out: object, err: object, stdin: bytes | None) -> int:
    flags, rest = _opts(args, "Rh")
    uid, gid = _ids(sh, rest[0])
    for p in rest[1:]:
        for q in _walk_all(sh.fs, sh._abs(p)) if "R" in flags else [sh._abs(p)]:
            sh.fs.lchown(q, uid, gid)
    return 0


@_builtin("touch")
def _touch(sh: Shell, args: list[str], out: object, err: object, stdin: bytes | None) -> int:
    flags, paths = _opts(args, "c")
    for p in paths:
        full = sh._abs(p)
        if sh.fs.exists(full):
            sh.fs.utime(full)
        elif "c" not in flags:
            sh.fs.write_bytes(full, b"")
    return 0


@_builtin("test", "[")
def _test(sh: Shell, args: list[str], out: object, err: object, stdin: bytes | None) -> int:
    if args and args[-1] == "]":
        args = args[:-1]
    neg = bool(args) and args[0] == "!"
    if neg:
        args = args[1:]
    if len(args) == 2 and args[0] in ("-e", "-f", "-d", "-L", "-h", "-s", "-n", "-z", "-x"):
        op, a = args
        p = sh._abs(a)
        r = {"-e": lambda: sh.fs.exists(p), "-f": lambda: sh.fs.isfile(p), "-d": lambda: sh.fs.isdir(p),
             "-L": lambda: sh.fs.islink(p), "-h": lambda: sh.fs.islink(p),
             "-s": lambda: sh.fs.exists(p) and sh.fs.stat(p).st_size > 0,
             "-x": lambda: sh.fs.exists(p) and bool(sh.fs.stat(p).st_mode & 0o111),
             "-n": lambda: a != "", "-z": lambda: a == ""}[op]()
    elif len(args) == 3 and args[1] in ("=", "!=", "==", "-eq", "-ne"):
        a, op, b = args
        r = (a == b) if op in ("=", "==") else (a != b) if op == "!=" else \
            (int(a) == int(b)) if op == "-eq" else (int(a) != int(b))
    elif len(args) == 1:
        r = args[0] != ""
    else:
        raise UnsupportedCommand(f"test {' '.join(args)} is not in the python shell subset")
    return 0 if r != neg else 1


def run_script(script: str, fs: FileSystem, env: Mapping[str, str], cwd: str = "/") -> Result:
    """Run a RUN command's shell text on ``fs``; UnsupportedCommand for anything outside the subset."""
    return Shell(fs, env, cwd).run(script)


__all__ = ["Result", "Shell", "UnsupportedCommand", "run_script"]
