"""The scenario table of issue 14: build v1, edit, build v2 (v3) under both rule sets.

Each scenario is data: the first context, then versions, each an optional edit of the
context directory, build args, ``--no-cache`` or ``--target``. ``why`` is a phrase the
explanation of the last build must contain (per rule set or for both); ``docker_wrong``
marks the places where Docker's own verdict is known wrong and says what we do instead.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

Edit = Callable[[Path], None]


@attrs.frozen
class V:
    """One build of a scenario."""

    edit: Edit | None = None
    args: Mapping[str, str] = attrs.field(factory=dict)
    no_cache: bool = False
    target: str | None = None

    def docker_flags(self) -> list[str]:
        """This build's options on ``docker build``'s command line."""
        flags = [f for k, val in self.args.items() for f in ("--build-arg", f"{k}={val}")]
        if self.no_cache:
            flags.append("--no-cache")
        if self.target:
            flags += ["--target", self.target]
        return flags


@attrs.frozen
class Scenario:
    """A named sequence of builds over one context directory."""

    name: str
    files: Mapping[str, str | bytes]
    versions: tuple[V, ...]
    why: Mapping[str, str] = attrs.field(factory=dict)
    """rules ("classic"/"buildkit"/"both") -> a phrase the last build's explain() contains."""
    docker_wrong: Mapping[tuple[str, int], str] = attrs.field(factory=dict)
    """(rules, version index) -> why Docker's verdicts on that build are wrong (they must differ from ours)."""


def materialise(sc: Scenario, ctx: Path) -> Path:
    """Write a scenario's first context into ``ctx`` (a ``link.txt`` is a symlink to ``a.txt``)."""
    for name, text in sc.files.items():
        p = ctx / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("link.txt"):
            p.symlink_to("a.txt")
        else:
            p.write_bytes(text.encode() if isinstance(text, str) else text)
    return ctx


def write(path: str, text: str | bytes) -> Edit:
    """An edit: write ``text`` to ``path`` in the context."""
    def edit(ctx: Path) -> None:
        p = ctx / path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text.encode() if isinstance(text, str) else text)
    return edit


def keep_mtime(path: str, text: str) -> Edit:
    """An edit that changes bytes but keeps the size and the mtime."""
    def edit(ctx: Path) -> None:
        p = ctx / path
        st = p.stat()
        assert len(text.encode()) == st.st_size
        p.write_text(text)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    return edit


def touch(path: str) -> Edit:
    """An edit of the mtime only."""
    def edit(ctx: Path) -> None:
        st = (ctx / path).stat()
        os.utime(ctx / path, ns=(st.st_atime_ns + 7 * 10**9, st.st_mtime_ns + 7 * 10**9))
    return edit


def chmod(path: str, mode: int) -> Edit:
    """An edit of the mode only."""
    return lambda ctx: os.chmod(ctx / path, mode)


def chown(path: str, uid: int, gid: int) -> Edit:
    """An edit of the owner only (the CLI sends 0:0 anyway)."""
    return lambda ctx: os.chown(ctx / path, uid, gid)


def remove(path: str) -> Edit:
    """An edit removing a file."""
    return lambda ctx: (ctx / path).unlink()


def both(*edits: Edit) -> Edit:
    """Several edits in order."""
    def edit(ctx: Path) -> None:
        for e in edits:
            e(ctx)
    return edit


def tar_of(files: Mapping[str, str]) -> bytes:
    """A small tar archive (for ADD)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


BASIC = """FROM busybox
ENV A=1
COPY a.txt /app/a.txt
RUN cat /app/a.txt > /app/copy.txt
LABEL stage=one
RUN echo done > /done
"""

DOT = """FROM busybox
WORKDIR /src
COPY . .
RUN cat a.txt > /listing
"""

EARLY = """FROM busybox
{early}
COPY a.txt /app/a.txt
RUN echo built > /app/built
"""

MULTI = """FROM busybox AS build
COPY a.txt /in/a.txt
RUN {cmd}
FROM busybox AS other
RUN echo other > /other
FROM busybox
COPY --from=build /out /out
RUN cat /out > /final
"""

PARALLEL = """FROM busybox AS a
COPY a.txt /a
RUN cp /a /a2
FROM busybox AS b
COPY b.txt /b
RUN cp /b /b2
FROM busybox
COPY --from=a /a2 /x/a
COPY --from=b /b2 /x/b
RUN cat /x/a /x/b > /x/all
"""

REORDER_BAD = """FROM busybox
WORKDIR /app
COPY . .
RUN cp deps.txt /installed
"""

REORDER_GOOD = """FROM busybox
WORKDIR /app
COPY deps.txt .
RUN cp deps.txt /installed
COPY . .
"""

METADATA = """FROM busybox
SHELL ["/bin/sh", "-c"]
EXPOSE 80/tcp 443
VOLUME /data
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --retries=3 CMD true
USER root
ENTRYPOINT ["sh", "-c"]
CMD ["echo hi"]
COPY a.txt /a.txt
"""

SYNTAX = """# escape=`
FROM busybox
ARG DIR=/opt
ENV TARGET=${DIR}/app `
    OTHER="two words"
WORKDIR ${TARGET:-/fallback}
# a comment between instructions
COPY a.txt `
     ${TARGET}/a.txt
RUN echo "$OTHER" > ${TARGET}/other && `
    mkdir -p ${TARGET}/sub && cp ${TARGET}/a.txt ${TARGET}/sub/
"""

LANGUAGE = """FROM busybox AS base
ARG NODEF
ARG WITHDEF=x
ENV P1=/opt P2=${P1}/bin
RUN echo "$NODEF-$WITHDEF-$P2" > /vars
COPY link.txt sub /data/
COPY --chown=nobody:nogroup a.txt /n
FROM base
COPY --from=base /vars /vars2
HEALTHCHECK NONE
ENTRYPOINT echo entry
USER nobody:nogroup
"""

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("identical rebuild", {"Dockerfile": BASIC, "a.txt": "one\n"}, (V(), V())),
    Scenario("COPY source content changed", {"Dockerfile": BASIC, "a.txt": "one\n"}, (V(), V(write("a.txt", "two!\n"))),
             why={"both": "file a.txt changed: content"}),
    Scenario("COPY source mtime only", {"Dockerfile": BASIC, "a.txt": "one\n"}, (V(), V(touch("a.txt")))),
    Scenario("COPY source mode only", {"Dockerfile": BASIC, "a.txt": "one\n"}, (V(), V(chmod("a.txt", 0o755))),
             why={"both": "file a.txt changed: mode"}),
    Scenario("COPY source owner only", {"Dockerfile": BASIC, "a.txt": "one\n"}, (V(), V(chown("a.txt", 1000, 1000)))),
    Scenario("COPY source same size and mtime", {"Dockerfile": BASIC, "a.txt": "one\n"},
             (V(), V(keep_mtime("a.txt", "two\n"))), why={"both": "file a.txt changed: content"},
             docker_wrong={("buildkit", 1): "BuildKit 0.8 does not re-send a file whose size and mtime are "
                           "unchanged and reuses the stale layer; ours hashes the bytes and misses"}),
    Scenario(".dockerignore'd file changed", {"Dockerfile": DOT, ".dockerignore": "*.log\n", "a.txt": "a\n",
                                              "x.log": "1\n"}, (V(), V(write("x.log", "2\n")))),
    Scenario("COPY . . file changed", {"Dockerfile": DOT, ".dockerignore": "*.log\n", "a.txt": "a\n"},
             (V(), V(write("a.txt", "b\n")), V(write("new.txt", "n\n"))), why={"both": "file new.txt added"}),
    Scenario(".dockerignore gains a pattern", {"Dockerfile": DOT, "a.txt": "a\n", "b.txt": "b\n"},
             (V(), V(write(".dockerignore", "b.txt\n"))), why={"both": "file .dockerignore added"}),
    Scenario("early ENV changed", {"Dockerfile": EARLY.format(early="ENV MODE=dev"), "a.txt": "a\n"},
             (V(), V(write("Dockerfile", EARLY.format(early="ENV MODE=prod")))),
             why={"classic": "ENV MODE changed at line 2", "buildkit": "ENV MODE changed at line 2"}),
    Scenario("early LABEL changed", {"Dockerfile": EARLY.format(early="LABEL v=1"), "a.txt": "a\n"},
             (V(), V(write("Dockerfile", EARLY.format(early="LABEL v=2")))), why={"classic": "LABEL v changed"}),
    Scenario("early WORKDIR changed", {"Dockerfile": EARLY.format(early="WORKDIR /w1"), "a.txt": "a\n"},
             (V(), V(write("Dockerfile", EARLY.format(early="WORKDIR /w2"))))),
    Scenario("early USER changed", {"Dockerfile": EARLY.format(early="USER root"), "a.txt": "a\n"},
             (V(), V(write("Dockerfile", EARLY.format(early="USER 0:0")))),
             why={"both": "USER changed at line 2"}),
    Scenario("used ARG changed", {"Dockerfile": "FROM busybox\nARG V=1\nCOPY a.txt /a\nRUN echo $V > /v\n",
                                  "a.txt": "a\n"}, (V(), V(args={"V": "2"})), why={"both": "ARG V changed"}),
    Scenario("unused ARG changed", {"Dockerfile": "FROM busybox\nARG V=1\nCOPY a.txt /a\nRUN echo hi > /hi\n",
                                    "a.txt": "a\n"}, (V(), V(args={"V": "2"})), why={"both": "ARG V changed"}),
    Scenario("ARG declared after the RUN", {"Dockerfile": "FROM busybox\nRUN echo one > /one\nARG V=1\n"
                                            "RUN echo two > /two\n", "a.txt": "a\n"}, (V(), V(args={"V": "3"}))),
    Scenario("RUN text edited", {"Dockerfile": BASIC, "a.txt": "one\n"},
             (V(), V(write("Dockerfile", BASIC.replace("cat /app/a.txt >", "cat /app/a.txt /app/a.txt >")))),
             why={"both": "command changed"}),
    Scenario("dependencies copied after the sources (bad order)",
             {"Dockerfile": REORDER_BAD, "deps.txt": "lib==1\n", "main.py": "print(1)\n"},
             (V(), V(write("main.py", "print(2)\n"))), why={"both": "file main.py changed: content"}),
    Scenario("dependencies copied before the sources (good order)",
             {"Dockerfile": REORDER_GOOD, "deps.txt": "lib==1\n", "main.py": "print(1)\n"},
             (V(), V(write("main.py", "print(2)\n")), V(write("deps.txt", "lib==2\n")))),
    Scenario("multi-stage, builder output unchanged",
             {"Dockerfile": MULTI.format(cmd="cp /in/a.txt /out"), "a.txt": "a\n"},
             (V(), V(write("Dockerfile", MULTI.format(cmd="cp /in/a.txt /out && true"))))),
    Scenario("multi-stage, builder output changed",
             {"Dockerfile": MULTI.format(cmd="cp /in/a.txt /out"), "a.txt": "a\n"},
             (V(), V(write("a.txt", "changed\n"))), why={"both": "file a.txt changed: content"}),
    Scenario("parallel stages, one changed", {"Dockerfile": PARALLEL, "a.txt": "a\n", "b.txt": "b\n"},
             (V(), V(write("b.txt", "bb\n")))),
    Scenario("unused stage changed", {"Dockerfile": MULTI.format(cmd="cp /in/a.txt /out"), "a.txt": "a\n"},
             (V(), V(write("Dockerfile", MULTI.format(cmd="cp /in/a.txt /out").replace("echo other", "echo else"))))),
    Scenario("ADD of a tar archive", {"Dockerfile": "FROM busybox\nADD files.tar /opt/\nRUN cat /opt/two > /ls\n",
                                      "files.tar": tar_of({"x/one": "1\n", "two": "2\n"})},
             (V(), V(write("files.tar", tar_of({"x/one": "1\n", "two": "22\n"})))),
             why={"both": "file files.tar changed: content"}),
    Scenario("--no-cache", {"Dockerfile": BASIC, "a.txt": "one\n"}, (V(), V(no_cache=True)),
             why={"both": "--no-cache"}),
    Scenario("wildcard COPY gains a file", {"Dockerfile": "FROM busybox\nCOPY *.txt /t/\nRUN cat /t/a.txt > /list\n",
                                            "a.txt": "a\n", "b.md": "b\n"},
             (V(), V(write("c.txt", "c\n"))), why={"both": "file c.txt added"}),
    Scenario("COPY of a directory gains a file", {"Dockerfile": "FROM busybox\nCOPY src /src\nRUN cat /src/a.py > /l\n",
                                                  "src/a.py": "a\n", "src/pkg/b.py": "b\n"},
             (V(), V(write("src/pkg/c.py", "c\n"))), why={"both": "file src/pkg/c.py added"}),
    Scenario("COPY --chown changed", {"Dockerfile": "FROM busybox\nCOPY --chown=1000:1000 a.txt /home/a\n"
                                      "RUN echo x > /x\n", "a.txt": "a\n"},
             (V(), V(write("Dockerfile", "FROM busybox\nCOPY --chown=1001:1001 a.txt /home/a\nRUN echo x > /x\n")))),
    Scenario("CMD changed at the end", {"Dockerfile": "FROM busybox\nCOPY a.txt /a\nCMD [\"cat\", \"/a\"]\n",
                                        "a.txt": "a\n"},
             (V(), V(write("Dockerfile", "FROM busybox\nCOPY a.txt /a\nCMD [\"cat\", \"/a\", \"/a\"]\n"))),
             why={"classic": "instruction changed"}),
    Scenario("metadata instructions", {"Dockerfile": METADATA, "a.txt": "a\n"},
             (V(), V(write("Dockerfile", METADATA.replace("EXPOSE 80/tcp 443", "EXPOSE 8080"))))),
    Scenario("escape directive, continuations, substitution", {"Dockerfile": SYNTAX, "a.txt": "a\n"},
             (V(), V(args={"DIR": "/srv"}))),
    Scenario("--target stage", {"Dockerfile": MULTI.format(cmd="cp /in/a.txt /out"), "a.txt": "a\n"},
             (V(target="build"), V(write("a.txt", "b\n"), target="build"))),
    Scenario("scratch base", {"Dockerfile": "FROM scratch\nCOPY a.txt /a.txt\nCOPY b /b\n", "a.txt": "a\n",
                              "b/c": "c\n"}, (V(), V(write("b/c", "cc\n")))),
    Scenario("ARGs without defaults, ENV chains, FROM a stage, symlink source, --chown by name",
             {"Dockerfile": LANGUAGE, "a.txt": "a\n", "link.txt": b"", "sub/x": "x\n"},
             (V(), V(write("sub/x", "y\n"), args={"NODEF": "set"}))),
    Scenario("a RUN that changes nothing, a WORKDIR that exists",
             {"Dockerfile": "FROM busybox\nWORKDIR /bin\nRUN true\nCOPY a.txt /a\n", "a.txt": "a\n"},
             (V(), V(write("a.txt", "b\n")))),
    Scenario(".dockerignore exceptions", {"Dockerfile": DOT, ".dockerignore": "docs\n*.md\n!README.md\n",
                                          "README.md": "r\n", "NOTES.md": "n\n", "docs/a": "a\n", "a.txt": "a\n"},
             (V(), V(write("NOTES.md", "nn\n")), V(write("README.md", "rr\n"))),
             why={"both": "file README.md changed: content"}),
    Scenario("relative WORKDIRs, an ENV overriding an ARG",
             {"Dockerfile": "FROM busybox\nARG V=1\nENV V=2\nWORKDIR app\nWORKDIR sub\nRUN echo $V > v\n"
                            "COPY a.txt .\n", "a.txt": "a\n"},
             (V(), V(args={"V": "3"}))),
    Scenario("proxy build args", {"Dockerfile": "FROM busybox\nARG https_proxy\nRUN echo hi > /hi\n"},
             (V(), V(args={"HTTP_PROXY": "http://proxy:3128"}), V(args={"https_proxy": "http://proxy:3128"})),
             why={"both": "ARG https_proxy changed"}),
)
