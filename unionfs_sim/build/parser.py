"""The Dockerfile language: directives, comments, continuations, instructions, variables.

Mirrors BuildKit's ``frontend/dockerfile/parser`` (line handling, the ``escape``
directive) and ``shell/lex.go`` (quotes, ``$V``, ``${V:-x}``, ``${V:+x}``), which the
classic builder of Docker 20.10 shares. Every error names file, line and column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence

import attrs

from ..errors import DockerfileError

INSTRUCTIONS = frozenset({
    "FROM", "ARG", "ENV", "LABEL", "WORKDIR", "USER", "COPY", "ADD", "RUN", "CMD", "ENTRYPOINT",
    "EXPOSE", "VOLUME", "SHELL", "STOPSIGNAL", "HEALTHCHECK", "MAINTAINER", "ONBUILD",
})
"""The instructions Docker knows (ONBUILD is parsed and stored, as Docker does)."""

_JSON_FORMS = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL", "VOLUME", "COPY", "ADD"})
_FLAGS = {
    "FROM": frozenset({"platform"}), "COPY": frozenset({"from", "chown", "chmod"}),
    "ADD": frozenset({"chown", "chmod"}), "HEALTHCHECK": frozenset({"interval", "timeout", "start-period", "retries"}),
}
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")




@attrs.frozen
class Instruction:
    """One instruction as written: keyword, flags, arguments and where it stands."""

    cmd: str
    """The keyword, upper case (``COPY``)."""
    text: str
    """Everything after the keyword, continuations joined (flags included)."""
    flags: tuple[tuple[str, str | None], ...]
    """Leading ``--name=value`` (or ``--name``) flags, in order."""
    rest: str
    """The arguments after the flags."""
    json_args: tuple[str, ...] | None
    """The exec (JSON array) form, if the arguments are one."""
    line: int
    column: int
    end_line: int
    file: str = "Dockerfile"

    def flag(self, name: str) -> str | None:
        """The value of flag ``--name`` (``""`` for a bare flag), or None."""
        for k, v in self.flags:
            if k == name:
                return "" if v is None else v
        return None

    @property
    def original(self) -> str:
        """The instruction as ``docker build`` prints it (``COPY f.txt /app/f.txt``)."""
        return f"{self.cmd} {self.text}".rstrip()

    def error(self, message: str) -> DockerfileError:
        """A DockerfileError at this instruction."""
        return DockerfileError(message, self.file, self.line, self.column)


@attrs.frozen
class Dockerfile:
    """A parsed Dockerfile: its directives and its instructions in order."""

    instructions: tuple[Instruction, ...]
    escape: str = "\\"
    directives: tuple[tuple[str, str], ...] = ()
    file: str = "Dockerfile"


def parse(text: str, file: str = "Dockerfile") -> Dockerfile:
    """Parse Dockerfile ``text``; DockerfileError (with line and column) when Docker would refuse it."""
    lines = text.splitlines()
    escape = "\\"
    directives: list[tuple[str, str]] = []
    i = 0
    # Parser directives: only at the very top, before any instruction, comment or blank line.
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i].strip())
        if not m:
            break
        name, value = m.group(1).lower(), m.group(2)
        if name in (k for k, _ in directives):
            raise DockerfileError(f"only one {name} parser directive can be used", file, i + 1, 1)
        if name == "escape":
            if value not in ("\\", "`"):
                raise DockerfileError(f"invalid escape token '{value}' does not validate", file, i + 1, 1)
            escape = value
        directives.append((name, value))
        i += 1
    cont = re.compile(re.escape(escape) + r"[ \t]*$")
    out: list[Instruction] = []
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i
        column = len(raw) - len(raw.lstrip()) + 1
        body = raw.lstrip()
        while True:
            m = cont.search(body)
            if not m:
                break
            body = body[:m.start()]
            i += 1
            # blank lines and comment lines inside a continuation are skipped (as BuildKit does)
            while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                i += 1
            if i >= len(lines):
                break
            body += lines[i]
        end = i
        i += 1
        parts = body.split(None, 1)
        word = parts[0]
        cmd = word.upper()
        if cmd not in INSTRUCTIONS:
            raise DockerfileError(f"unknown instruction: {word}", file, start + 1, column)
        rest = parts[1].strip() if len(parts) > 1 else ""
        out.append(_instruction(cmd, rest, file, start + 1, column, end + 1))
    if not out:
        raise DockerfileError("the Dockerfile has no instructions", file, 0, 0)
    return Dockerfile(tuple(out), escape, tuple(directives), file)


def _instruction(cmd: str, rest: str, file: str, line: int, column: int, end_line: int) -> Instruction:
    flags: list[tuple[str, str | None]] = []
    args = rest
    if cmd not in ("ENV", "LABEL", "ARG", "MAINTAINER", "ONBUILD"):
        while args.startswith("--"):
            word, _, tail = args.partition(" ")
            if word == "--":
                break
            name, eq, value = word[2:].partition("=")
            flags.append((name, value if eq else None))
            args = tail.lstrip()
    json_args: tuple[str, ...] | None = None
    if cmd in _JSON_FORMS and args.startswith("["):
        try:
            v = json.loads(args)
        except ValueError:
            v = None
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            json_args = tuple(v)
    known = _FLAGS.get(cmd, frozenset())
    for name, _ in flags:
        if name not in known:
            raise DockerfileError(f"unknown flag: --{name}", file, line, column)
    if not args and cmd not in ("CMD", "ENTRYPOINT"):
        raise DockerfileError(f"{cmd} requires at least one argument", file, line, column)
    return Instruction(cmd, rest, tuple(flags), args, json_args, line, column, end_line, file)


# --- words and variables (shell/lex.go) ------------------------------------------------

class _Lexer:
    """One pass over a word: quotes, escapes and ``$`` expansion, as Docker's ShellLex."""

    def __init__(self, text: str, env: Mapping[str, str], escape: str, on_error: Callable[[str], Exception],
                 used: set[str] | None) -> None:
        self.s, self.i, self.env, self.esc, self.err, self.used = text, 0, env, escape, on_error, used

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def next(self) -> str:
        c = self.peek()
        self.i += 1
        return c

    def words(self, split: bool) -> list[str]:
        out: list[str] = []
        cur: list[str] = []
        started = False
        while self.i < len(self.s):
            c = self.peek()
            if split and c in " \t\n":
                self.i += 1
                if started:
                    out.append("".join(cur))
                    cur, started = [], False
                continue
            started = True
            if c == "'":
                self.i += 1
                j = self.s.find("'", self.i)
                if j < 0:
                    raise self.err("unexpected end of statement while looking for matching single-quote")
                cur.append(self.s[self.i:j])
                self.i = j + 1
            elif c == '"':
                self.i += 1
                while True:
                    if self.i >= len(self.s):
                        raise self.err("unexpected end of statement while looking for matching double-quote")
                    c = self.next()
                    if c == '"':
                        break
                    if c == "$":
                        cur.append(self.dollar())
                    elif c == self.esc and self.peek() in ('"', "$", self.esc):
                        cur.append(self.next())
                    else:
                        cur.append(c)
            elif c == "$":
                self.i += 1
                value = self.dollar()
                cur.append(value)
            elif c == self.esc:
                self.i += 1
                if self.i < len(self.s):
                    cur.append(self.next())
            else:
                cur.append(self.next())
        if started:
            out.append("".join(cur))
        return out

    def lookup(self, name: str) -> str | None:
        if self.used is not None:
            self.used.add(name)
        return self.env.get(name)

    def dollar(self) -> str:
        c = self.peek()
        if c == "{":
            self.i += 1
            m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", self.s[self.i:])
            if not m:
                raise self.err(f"bad substitution in {self.s!r}")
            name = m.group(0)
            self.i += len(name)
            c = self.next()
            if c == "}":
                return self.lookup(name) or ""
            op = c
            if op == ":":
                op += self.next()
            if op not in (":-", ":+", "-", "+"):
                raise self.err(f"unsupported modifier ({op}) in substitution ${{{name}{op}...}}")
            depth, j = 1, self.i
            while j < len(self.s):
                if self.s[j] == "{":
                    depth += 1
                elif self.s[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j >= len(self.s):
                raise self.err(f"missing '}}' in substitution ${{{name}{op}...")
            word = _Lexer(self.s[self.i:j], self.env, self.esc, self.err, self.used).words(split=False)
            self.i = j + 1
            alt = word[0] if word else ""
            v = self.lookup(name)
            if op == ":-":
                return v if v else alt
            if op == "-":
                return v if v is not None else alt
            if op == ":+":
                return alt if v else ""
            return alt if v is not None else ""
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]", self.s[self.i:])
        if not m:
            return "$"
        self.i += len(m.group(0))
        return self.lookup(m.group(0)) or ""


def expand(word: str, env: Mapping[str, str], escape: str = "\\", *,
           on_error: Callable[[str], Exception] = ValueError, used: set[str] | None = None) -> str:
    """One word with quotes removed and variables substituted (ProcessWord)."""
    out = _Lexer(word, env, escape, on_error, used).words(split=False)
    return out[0] if out else ""


def expand_words(text: str, env: Mapping[str, str], escape: str = "\\", *,
                 on_error: Callable[[str], Exception] = ValueError, used: set[str] | None = None) -> list[str]:
    """Whitespace-separated words with quotes removed and variables substituted (ProcessWords)."""
    return _Lexer(text, env, escape, on_error, used).words(split=True)


def raw_words(text: str, escape: str = "\\") -> list[str]:
    """Split on whitespace outside quotes, keeping quotes and escapes (parser.go's parseWords)."""
    out: list[str] = []
    cur: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            cur.append(c)
            if c == escape and quote == '"' and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c in " \t":
            if cur:
                out.append("".join(cur))
                cur = []
        else:
            cur.append(c)
            if c == escape and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif c in "'\"":
                quote = c
        i += 1
    if cur:
        out.append("".join(cur))
    return out


def name_values(ins: Instruction, escape: str = "\\") -> list[tuple[str, str]]:
    """The ``key=value`` pairs of ENV/LABEL/ARG, values still quoted (parseNameVal).

    The legacy one-pair form ``ENV key value with spaces`` is accepted for ENV and LABEL.
    """
    words = raw_words(ins.rest, escape)
    if not words:
        raise ins.error(f"{ins.cmd} requires at least one argument")
    if "=" not in words[0] and ins.cmd != "ARG":
        if len(words) < 2:
            raise ins.error(f"{ins.cmd} must have two arguments")
        key, _, value = ins.rest.partition(" ")
        return [(key, value.strip())]
    out: list[tuple[str, str]] = []
    for w in words:
        k, eq, v = w.partition("=")
        if not k:
            raise ins.error(f"{ins.cmd} names can not be blank")
        if not eq and ins.cmd != "ARG":
            raise ins.error(f"Syntax error - can't find = in \"{w}\". Must be of the form: name=value")
        out.append((k, v if eq else "\0"))  # "\0": an ARG without a default
    return out


def command_args(ins: Instruction) -> tuple[list[str], bool]:
    """The command of RUN/CMD/ENTRYPOINT: (JSON list, True) or ([shell text], False)."""
    if ins.json_args is not None:
        return list(ins.json_args), True
    return [ins.rest], False


def split_stages(df: Dockerfile) -> tuple[list[Instruction], list[list[Instruction]]]:
    """The meta ARGs before the first FROM, and the instructions of each stage (FROM first)."""
    meta: list[Instruction] = []
    stages: list[list[Instruction]] = []
    for ins in df.instructions:
        if ins.cmd == "FROM":
            stages.append([ins])
        elif not stages:
            if ins.cmd != "ARG":
                raise ins.error(f"no build stage in current context: {ins.cmd} must come after FROM "
                                "(only ARG may come before the first FROM)")
            meta.append(ins)
        else:
            stages[-1].append(ins)
    if not stages:
        raise DockerfileError("the Dockerfile has no FROM instruction", df.file, 0, 0)
    return meta, stages


def json_list(values: Sequence[str]) -> str:
    """A Go ``%q`` rendering of a string slice: ``["a" "b"]`` (Docker's history text)."""
    return "[" + " ".join(go_quote(v) for v in values) + "]"


def go_quote(s: str) -> str:
    """Go's ``strconv.Quote`` for the strings Dockerfiles hold."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


__all__ = ["INSTRUCTIONS", "Dockerfile", "DockerfileError", "Instruction", "command_args", "expand",
           "expand_words", "go_quote", "json_list", "name_values", "parse", "raw_words", "split_stages"]
