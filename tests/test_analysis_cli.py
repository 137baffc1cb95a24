"""The analysis commands through click's CliRunner, their --json against the schemas, once as a
real process, and importable without rich."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

import unionfs_sim as ufs
from unionfs_sim import analysis
from unionfs_sim.cli import main
from unionfs_sim.cli.analysis import SCHEMAS

from .analysis_images import CATALOGUE


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("cli") / "img.tar"
    ufs.docker_archive.save(CATALOGUE["hides_nothing"](), path, tags=["app:1"])
    return str(path)


def run(*args: str, code: int = 0) -> str:
    r = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert r.exit_code == code, r.output
    return r.output


@pytest.mark.parametrize("command", ["inspect", "history", "layers", "ls", "diff", "efficiency", "df", "export"])
def test_json_matches_schema(command: str, archive: str, tmp_path: Path) -> None:
    args = [command, f"docker-archive:{archive}:app:1", "--json"]
    if command == "export":
        args.insert(2, str(tmp_path / "flat.tar"))
    doc = json.loads(run(*args))
    jsonschema.validate(doc, SCHEMAS[command])


def test_values_are_the_librarys(archive: str, tmp_path: Path) -> None:
    img = ufs.docker_archive.load(archive)
    assert json.loads(run("inspect", f"docker-archive:{archive}:app:1"))[0] == img.inspect(["app:1"])
    assert json.loads(run("history", archive, "--json")) == [r.to_json() for r in analysis.history(img)]
    doc = json.loads(run("efficiency", archive, "--method", "dive", "--json"))
    assert doc["score"] == analysis.efficiency(img, method="dive").score and doc["ci"] is None
    ls = {r["path"]: r["layer"] for r in json.loads(run("ls", archive, "/etc", "--json"))}
    assert ls == {"/etc": 0, "/etc/a": 1}
    changes = {(c["kind"], c["path"]) for c in json.loads(run("diff", archive, "--json"))}
    assert changes >= {("D", "/etc/b"), ("A", "/zzz")}
    out = tmp_path / "flat.tar"
    run("export", archive, str(out))
    with tarfile.open(out) as t:
        assert "etc/b" not in t.getnames() and "zzz" in t.getnames()
    (tmp_path / "dir").mkdir()
    run("export", archive, str(tmp_path / "dir"))
    assert (tmp_path / "dir" / "etc" / "a").read_bytes() == b"x" * 1200


def test_diff_two_images(tmp_path: Path) -> None:
    a = ufs.Image.from_layers([ufs.Layer.from_dict({"x": b"1", "d/y": b"2", "gone/z": b"3"})])
    b = ufs.Image.from_layers([ufs.Layer.from_dict({"x": b"changed", "d/y": b"2", "new": b"4"})])
    ufs.oci.save(a, tmp_path / "a", tag="1")
    ufs.oci.save(b, tmp_path / "b", tag="1")
    out = run("diff", f"oci:{tmp_path / 'a'}:1", f"oci:{tmp_path / 'b'}:1")
    assert out.splitlines() == ["D /gone", "A /new", "C /x"]


def test_a_container_given_as_an_upperdir(archive: str, tmp_path: Path) -> None:
    """diff --upper and df --container read a container's writable layer from an overlayfs
    upperdir (what mount --upper and the drop-in keep) and answer as the library does."""
    from unionfs_sim.cli.fuse_overlayfs import upper_entries
    from unionfs_sim.codec import overlaydir

    img = ufs.docker_archive.load(archive)
    c = img.container()
    c.fs.write_bytes("/etc/a", b"changed")
    c.fs.unlink("/zzz")
    c.fs.makedirs("/new/dir")
    c.fs.write_bytes("/new/dir/f", b"f" * 5000)
    upper = tmp_path / "upper"
    overlaydir.write(upper_entries(c), upper, format="overlay")
    out = json.loads(run("diff", archive, "--upper", str(upper), "--json"))
    assert out == [{"kind": ch.kind, "path": ch.path} for ch in c.diff()]
    assert {"kind": "D", "path": "/zzz"} in out and {"kind": "A", "path": "/new/dir/f"} in out
    doc = json.loads(run("df", archive, "--container", "web", archive, str(upper), "--json"))
    jsonschema.validate(doc, SCHEMAS["df"])
    assert doc == analysis.disk_usage({archive: img}, {"web": c}).to_json()
    assert doc["containers"][0]["size"] > 5000 and doc["images"][0]["containers"] == 1
    text = run("df", "--container", "web", archive, str(upper))
    assert "web" in text and "CONTAINER" in text
    r = CliRunner().invoke(main, ["diff", archive, "--upper", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "nope" in r.output and "Traceback" not in r.output


def test_df_size_rule(tmp_path: Path) -> None:
    """``df --size-rule`` as inspect and history take it: tar (BuildKit's count, dive's)
    leaves out the symlinks' target bytes that overlay2 counts."""
    img = ufs.Image.from_layers([ufs.Layer.from_dict({"bin/busybox": b"b" * 100, "bin/sh": ufs.Symlink("busybox"),
                                                      "bin/ls": ufs.Symlink("/bin/busybox")})])
    path = str(tmp_path / "links.tar")
    ufs.docker_archive.save(img, path)
    docs = {rule: json.loads(run("df", path, "--json", "--size-rule", rule)) for rule in ("overlay2", "tar")}
    assert docs["tar"] == analysis.disk_usage({path: img}, rule="tar").to_json()
    assert docs["overlay2"]["images"][0]["size"] - docs["tar"]["images"][0]["size"] == len("busybox/bin/busybox")


def test_ci_gate_exit_codes_and_config(archive: str, tmp_path: Path) -> None:
    out = run("efficiency", archive, "--ci", code=1)  # reclaimable: 2200 of 1255 user bytes
    assert "FAIL: highestUserWastedPercent" in out and "Result:FAIL" in out
    run("efficiency", archive, "--ci", "--method", "dive")  # dive sees no waste here
    cfg = tmp_path / "rules.yaml"
    cfg.write_text("rules:\n  lowestEfficiency: 0.3\n  highestUserWastedPercent: disabled\n")
    out = run("efficiency", archive, "--ci", "--ci-config", str(cfg))
    assert "SKIP: highestUserWastedPercent" in out
    doc = json.loads(run("efficiency", archive, "--ci", "--json", "--lowestEfficiency", "0.99", code=1))
    assert doc["ci"]["passed"] is False


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["history", str(tmp_path / "missing.tar")])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "missing.tar" in r.output
    assert "Traceback" not in r.output
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    r = CliRunner().invoke(main, ["efficiency", str(tmp_path / "junk.tar")])
    assert r.exit_code == 1 and "junk.tar" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["layers", "nosuch:thing"])
    assert r.exit_code == 2 and "unknown transport" in r.output


def test_real_process_and_no_rich(archive: str) -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'rich':\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = ['unionfs-sim', 'history', sys.argv[1]]\n"
        "from unionfs_sim.cli import main\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-c", code, archive], check=False, capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    r = subprocess.run([sys.executable, "-m", "unionfs_sim", "efficiency", archive, "--method", "dive", "--json"],
                       check=False, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    jsonschema.validate(json.loads(r.stdout), SCHEMAS["efficiency"])
