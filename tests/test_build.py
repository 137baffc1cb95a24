"""The builder without Docker: parser, bad input, the shell subset, callables, keys, explain."""

from __future__ import annotations

from pathlib import Path

import pytest

import unionfs_sim as ufs
from unionfs_sim.build import Builder, BuildError, BuildResult, DockerfileError, parse
from unionfs_sim.build.context import Context, ignored, read_dockerignore
from unionfs_sim.build.parser import expand, expand_words
from unionfs_sim.build.shell import UnsupportedCommand, run_script


def base() -> ufs.Image:
    return ufs.Image.from_layers([ufs.Layer.from_dict({
        "bin/": ufs.Dir(mode=0o755), "bin/sh": ufs.File(b"#!", mode=0o755),
        "etc/": ufs.Dir(mode=0o755),
        "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        "etc/group": b"root:x:0:\napp:x:1000:\n", "tmp/": ufs.Dir(mode=0o1777),
    })], config=ufs.ImageConfig(env={"PATH": "/bin"}))


def builder(**kw: object) -> Builder:
    b = Builder(isolation="python", **kw)  # type: ignore[arg-type]
    b.add(base(), "base:1")
    return b


def build(b: Builder, df: str, files: dict[str, str] | None = None, **kw: object) -> BuildResult:
    ctx = {"Dockerfile": df, **(files or {})}
    return b.build(ctx, **kw)  # type: ignore[arg-type]


# --- parser ------------------------------------------------------------------------------

def test_parser_joins_continuations_and_skips_comments() -> None:
    df = parse("FROM a\nRUN echo a \\\n# comment inside\n    && echo b\n\nCOPY x y\n")
    assert [i.cmd for i in df.instructions] == ["FROM", "RUN", "COPY"]
    run = df.instructions[1]
    assert run.rest == "echo a     && echo b" and (run.line, run.end_line) == (2, 4)


def test_escape_directive() -> None:
    df = parse("# escape=`\nFROM a\nRUN dir `\n  c:\\\n")
    assert df.escape == "`" and df.instructions[1].rest == "dir   c:\\"


def test_unknown_instruction_names_line_and_column() -> None:
    with pytest.raises(DockerfileError) as e:
        parse("FROM a\n\n  FORM b\n", "app.Dockerfile")
    assert (e.value.line, e.value.column) == (3, 3)
    assert "app.Dockerfile:3:3: unknown instruction: FORM" in str(e.value)


def test_unknown_flag_is_refused() -> None:
    with pytest.raises(DockerfileError, match=r"Dockerfile:2:1: unknown flag: --frm"):
        parse("FROM a\nCOPY --frm=b x y\n")


def test_variable_substitution() -> None:
    env = {"A": "1", "E": ""}
    assert expand("${A:-x}-${B:-y}-${E:-z}-${E-w}-${A:+set}-$A", env) == "1-y-z--set-1"
    assert expand("'$A'\"$A\"\\$A", env) == "$A1$A"
    assert expand_words('a "b c" $A', env) == ["a", "b c", "1"]


def test_dockerignore_rules() -> None:
    pats = read_dockerignore("# c\n*.log\n!keep.log\nbuild/\n**/tmp\n/abs\n")
    assert ignored("x.log", pats) and not ignored("keep.log", pats)
    assert ignored("build/a/b", pats) and ignored("a/b/tmp", pats) and ignored("tmp", pats)
    assert ignored("abs", pats) and not ignored("src/x.log", pats)


# --- building ---------------------------------------------------------------------------

def test_build_makes_layers_config_and_history() -> None:
    b = builder()
    r = build(b, "FROM base:1\nENV A=1 B=\"two words\"\nWORKDIR /app\nCOPY f.txt .\n"
                 "RUN mkdir -p d && echo $B > d/b && cp f.txt g.txt\nCMD [\"sh\"]\n",
              {"f.txt": "hello\n"}, tag="app:1", rules="buildkit")
    fs = r.image.fs
    assert fs.read_bytes("/app/f.txt") == b"hello\n" and fs.read_bytes("/app/d/b") == b"two words\n"
    assert fs.read_bytes("/app/g.txt") == b"hello\n"
    cfg = r.image.config_json()["config"]
    assert cfg["Env"] == ["PATH=/bin", "A=1", "B=two words"] and cfg["WorkingDir"] == "/app"
    assert [h.created_by for h in r.image.history][1:] == [
        "ENV A=1 B=two words", "WORKDIR /app", "COPY f.txt . # buildkit",
        "RUN /bin/sh -c mkdir -p d && echo $B > d/b && cp f.txt g.txt # buildkit", 'CMD ["sh"]']
    assert b.images["app:1"] is r.image and len(r.image.layers) == 4
    assert [s.cached for s in r.steps] == [None, None, False, False, False, None]


def test_second_build_hits_and_explain_names_the_file() -> None:
    b = builder()
    df = "FROM base:1\nCOPY deps.txt /app/\nRUN cp /app/deps.txt /installed\nCOPY src.py /app/\n"
    for rules in ("classic", "buildkit"):
        build(b, df, {"deps.txt": "a\n", "src.py": "1\n"}, rules=rules)
        r = build(b, df, {"deps.txt": "b\n", "src.py": "1\n"}, rules=rules)
        assert [s.cached for s in r.steps] == [None, False, False, False]
        assert r.steps[1].reason == "file deps.txt changed: content"
        assert r.steps[2].reason == "parent step 2 missed" and r.steps[2].caused_by == 2
        text = r.explain()
        assert "step 2 (line 2) COPY deps.txt /app/: file deps.txt changed: content" in text
        assert "and so: step 3 (RUN), step 4 (COPY)" in text
        html = r._repr_html_()
        assert html.startswith("<div") and "<script" not in html.lower()
        assert f"under {rules} rules: 3 of 3 steps missed the cache" in html
        assert "file deps.txt changed: content" in html and "built (after step 2)" in html
        assert r.image._repr_html_() in html  # the image's layers below the steps
    hit = build(b, df, {"deps.txt": "b\n", "src.py": "1\n"}, rules="buildkit")
    assert hit._repr_html_().count(">CACHED<") == 3


def test_reproducible_layers_and_ids() -> None:
    df = "FROM base:1\nCOPY f /f\nRUN echo x > /x\n"
    a = build(builder(), df, {"f": "1"}).image
    b = build(builder(), df, {"f": "1"}).image
    c = build(builder(epoch=1_700_000_000), df, {"f": "1"}).image
    assert a.id == b.id and a.diff_ids == b.diff_ids
    assert c.diff_ids != a.diff_ids and c.config_json()["created"] == "2023-11-14T22:13:20Z"


def test_python_callable_run_step_and_stale_cache() -> None:
    calls = []

    def fetch(fs: ufs.FileSystem, env: dict[str, str]) -> None:
        calls.append(env["V"])
        fs.write_text("/fetched", env["V"])

    b = builder(commands={"fetch-index": fetch})
    df = "FROM base:1\nENV V=1\nRUN fetch-index --all\n"
    r1 = build(b, df)
    r2 = build(b, df)
    assert r1.image.fs.read_text("/fetched") == "1" and calls == ["1"]
    assert r2.steps[2].cached is True and calls == ["1"]   # the executor never reaches the key


def test_no_cache_and_identical_rebuild() -> None:
    b = builder()
    df = "FROM base:1\nRUN echo 1 > /a\n"
    build(b, df)
    assert build(b, df).steps[1].cached is True
    r = build(b, df, no_cache=True)
    assert r.steps[1].cached is False and r.steps[1].reason == "--no-cache"


def test_buildkit_skips_unused_stage_classic_builds_it() -> None:
    df = "FROM base:1 AS unused\nRUN echo u > /u\nFROM base:1\nRUN echo f > /f\n"
    bk = build(builder(), df, rules="buildkit")
    cl = build(builder(), df, rules="classic")
    assert bk.steps[1].cached is None and "not need" in (bk.steps[1].reason or "")
    assert cl.steps[1].cached is False


def test_env_mapping_in_image_config() -> None:
    assert ufs.ImageConfig(env={"PATH": "/bin", "A": "b c"}).env == ("PATH=/bin", "A=b c")
    with pytest.raises(ValueError, match="not of the form KEY=value"):
        ufs.ImageConfig(env=["PATH"])


# --- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize(("df", "files", "message", "line"), [
    ("FROM base:1\nCOPY nope.txt /x\n", {}, "file not found in build context", 2),
    ("FROM base:1\nCOPY ../x /x\n", {}, "forbidden path outside the build context: ../x", 2),
    ("FROM missing:1\n", {}, "FROM missing:1: image 'missing:1' not found", 1),
    ("FROM base:1 AS a\nCOPY --from=b /x /x\nFROM base:1 AS b\nCOPY --from=a /y /y\n", {},
     "circular dependency detected on stage: b -> a -> b", 2),
    ("FROM base:1\nCOPY --from=nostage /x /x\n", {}, "COPY --from=nostage: image 'nostage' not found", 2),
    ("FROM base:1\nRUN apt-get update\n", {}, "`apt-get` is not in the python shell subset", 2),
    ("FROM base:1\nRUN echo oops >&2 && false\n", {}, "returned a non-zero code: 1: oops", 2),
    ("FROM base:1\nHEALTHCHECK --interval=5 CMD true\n", {}, "invalid duration", 2),
], ids=["missing-source", "climbs-out", "unknown-image", "from-cycle", "unknown-stage", "unsupported",
        "run-fails", "bad-duration"])
def test_bad_input_names_the_line_and_tags_nothing(df: str, files: dict[str, str], message: str, line: int) -> None:
    b = builder()
    good = build(b, "FROM base:1\nRUN echo ok > /ok\n", tag="app:1")
    with pytest.raises((BuildError, DockerfileError)) as e:
        build(b, df, files, tag="app:2")
    assert message in str(e.value)
    assert f"Dockerfile:{line}" in str(e.value)
    assert "app:2" not in b.images and b.images["app:1"] is good.image


def test_failing_run_reports_exit_code_and_stderr() -> None:
    with pytest.raises(BuildError) as e:
        build(builder(), "FROM base:1\nRUN cat /missing\n")
    assert e.value.exit_code == 1 and b"/missing" in e.value.stderr


# --- the shell subset ---------------------------------------------------------------------

def test_shell_subset_on_a_container() -> None:
    c = base().container()
    r = run_script("mkdir -p /a/b && cd /a && echo hi > b/f; printf '%s-%d\\n' x 3 >> b/f; "
                   "ln -s b/f link && cp -a b c && mv c d && chmod 700 d && chown -R 1000:1000 d; "
                   "touch t && rm -rf b; test -d d || exit 3; false || echo ok", c.fs, {"PATH": "/bin"})
    assert (r.status, r.stdout) == (0, b"ok\n")
    assert c.fs.read_bytes("/a/d/f") == b"hi\nx-3\n" and c.fs.readlink("/a/link") == "b/f"
    st = c.fs.stat("/a/d")
    assert oct(st.st_mode & 0o7777) == "0o700" and (st.st_uid, st.st_gid) == (1000, 1000)
    assert not c.fs.exists("/a/b") and c.fs.exists("/a/t")


def test_shell_subset_refuses_what_it_does_not_know() -> None:
    c = base().container()
    with pytest.raises(UnsupportedCommand, match="`curl` is not in the python shell subset"):
        run_script("curl http://x", c.fs, {})
    with pytest.raises(UnsupportedCommand, match="pipes"):
        run_script("echo a | tee b", c.fs, {})
    assert run_script("rm /nope", c.fs, {}).status == 1


def test_context_from_directory_forces_owners(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    (tmp_path / ".dockerignore").write_text("*.tmp\n")
    (tmp_path / "b.tmp").write_text("y")
    ctx = Context.from_directory(tmp_path)
    assert sorted(ctx.entries) == [".dockerignore", "a"] and ctx.entries["a"].uid == 0


def test_from_resolves_locally_then_in_the_registry() -> None:
    reg = ufs.Registry()
    reg.push(base(), "example.com/team/base:2")
    b = Builder(registry=reg, isolation="python")
    r = b.build({"Dockerfile": "FROM example.com/team/base:2\nRUN echo x > /x\n"}, tag="app")
    assert r.image.fs.read_bytes("/x") == b"x\n" and "app:latest" in b.images
    with pytest.raises(DockerfileError, match="Dockerfile:1:1: FROM other:1: image 'other:1' not found"):
        b.build({"Dockerfile": "FROM other:1\n"})


def test_copy_chown_chmod_glob_and_add_tar(tmp_path: Path) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("pkg/x")
        info.size, info.uid = 2, 7
        tf.addfile(info, io.BytesIO(b"x\n"))
    (tmp_path / "Dockerfile").write_text("FROM base:1\nCOPY --chown=app --chmod=600 *.txt /home/app/\n"
                                         "ADD t.tgz /opt/\n")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / "t.tgz").write_bytes(buf.getvalue())
    b = builder()
    fs = b.build(tmp_path).image.fs
    st = fs.stat("/home/app/b.txt")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1000, 0o600)
    assert fs.read_bytes("/opt/pkg/x") == b"x\n" and fs.stat("/opt/pkg/x").st_uid == 7
    with pytest.raises(DockerfileError, match="--chmod option requires BuildKit"):
        b.build(tmp_path, rules="classic")


def test_python_isolation_runs_as_the_user() -> None:
    """USER applies to RUN in the shell subset: its files, and the kernel's EACCES elsewhere."""
    b = builder()
    r = build(b, "FROM base:1\nUSER app\nRUN echo hi > /tmp/mine\n")
    st = r.image.fs.stat("/tmp/mine")
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    with pytest.raises(BuildError, match="Permission denied"):
        build(b, "FROM base:1\nUSER app\nRUN echo no > /etc/x\n")
