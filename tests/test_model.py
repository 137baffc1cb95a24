"""Unit tests of the in-memory model: layers, the flattened index, images, containers, data."""

from __future__ import annotations

import errno
import hashlib
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unionfs_sim as ufs
from unionfs_sim.content import CHUNK, Data
from unionfs_sim.image import chain_ids
from unionfs_sim.lower import Lower
from unionfs_sim.testing import strategies as ust


def L(spec: dict) -> ufs.Layer:  # noqa: N802 - a short constructor for tables
    return ufs.Layer.from_dict(spec)


# --- layers -------------------------------------------------------------------------


@pytest.mark.parametrize("spec, needle", [
    ({"a": b"x", "a/b": b"y"}, "/a/b: its parent /a is a File"),
    ({"a": ufs.WHITEOUT, "a/b": b"y"}, "its parent /a is a whiteout"),
    ({"a": b"x", "/a": b"y"}, "duplicate entry for /a"),
    ({"a": ufs.Hardlink("b")}, "hard link to /b, which this layer does not have"),
    ({"d/": None, "a": ufs.Hardlink("d")}, "a directory"),
    ({"a": "text"}, "unsupported entry"),
    ({"a/": b"x"}, "must be a Dir"),
    ({"../a": b"x"}, "climbs out"),
    ({"a" * 256: b"x"}, "longer than 255 bytes"),
    ({"a": ufs.Hardlink("b"), "b": ufs.Hardlink("a")}, "cycle"),
])
def test_from_dict_refuses_bad_input_naming_it(spec: dict, needle: str) -> None:
    with pytest.raises((ValueError, TypeError)) as e:
        L(spec)
    assert needle in str(e.value)


def test_hardlink_shares_one_object_and_counts_links() -> None:
    layer = L({"bin/busybox": ufs.File(b"bb", mode=0o755), "bin/sh": ufs.Hardlink("bin/busybox"),
               "bin/ash": ufs.Hardlink("/bin/sh")})
    assert layer["bin/sh"] is layer["bin/busybox"] is layer["bin/ash"]
    assert layer.nlink(layer["bin/sh"]) == 3
    # the same object under two plain keys is two files, not a link
    f = ufs.File(b"x")
    two = L({"a": f, "b": f})
    assert two["a"] is not two["b"] and two.nlink(two["a"]) == 1


def test_digest_is_deterministic_and_content_sensitive() -> None:
    spec = {"etc/": ufs.Dir(), "etc/hostname": b"box\n", "etc/motd": ufs.WHITEOUT, "var/": ufs.Dir(opaque=True)}
    a, b = L(spec), L(dict(reversed(list(spec.items()))))
    assert a.digest == b.digest and a.digest.startswith("sha256:") and len(a.digest) == 71
    import io

    buf = io.BytesIO()
    a.to_tar(buf)
    assert "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest() == a.digest
    changed = [
        {**spec, "etc/hostname": ufs.File(b"box\n", mode=0o600)},
        {**spec, "etc/hostname": ufs.File(b"box\n", uid=1)},
        {**spec, "etc/hostname": ufs.File(b"box\n", mtime_ns=10**9)},
        {**spec, "etc/hostname": ufs.File(b"box\n", xattrs={"user.a": b"1"})},
        {**spec, "var/": ufs.Dir()},
        {**spec, "etc/motd": b""},
    ]
    assert len({L(s).digest for s in changed} | {a.digest}) == len(changed) + 1


# --- the flattened index ------------------------------------------------------------


def flat(*specs: dict) -> dict[str, str]:
    low = Lower([L(s) for s in specs])
    out = {}
    for k, n in low.nodes.items():
        if k:
            out[k] = n.data.decode() if isinstance(n, ufs.File) else n.kind
    return out


@pytest.mark.parametrize("layers, expected", [
    # a whiteout deletes the lower path and its whole subtree
    ([{"a/b/c": b"1", "a/d": b"2"}, {"a/b": ufs.WHITEOUT}], {"a": "d", "a/d": "2"}),
    # an opaque dir hides lower children, keeps its own
    ([{"a/x": b"1"}, {"a/": ufs.Dir(opaque=True), "a/y": b"2"}], {"a": "d", "a/y": "2"}),
    # a non-directory in a middle layer cuts the merge below it
    ([{"a/x": b"1"}, {"a": b"file"}, {"a/": ufs.Dir(), "a/y": b"2"}], {"a": "d", "a/y": "2"}),
    # a whiteout in a middle layer hides only deeper layers
    ([{"a": b"1"}, {"a": ufs.WHITEOUT}, {"a": b"3"}], {"a": "3"}),
    # directories merge their names across layers
    ([{"a/x": b"1"}, {"a/y": b"2"}, {"a/z": b"3"}], {"a": "d", "a/x": "1", "a/y": "2", "a/z": "3"}),
    # a file under a lower symlink name replaces the symlink with a directory
    ([{"a": ufs.Symlink("b")}, {"a/x": b"1"}], {"a": "d", "a/x": "1"}),
    # a redirected directory merges with the lower one it names
    ([{"old/x": b"1"}, {"old": ufs.WHITEOUT, "new/": ufs.Dir(redirect="old"), "new/y": b"2"}],
     {"new": "d", "new/x": "1", "new/y": "2"}),
])
def test_flatten_rules(layers: list[dict], expected: dict[str, str]) -> None:
    assert flat(*layers) == expected


def test_merged_dir_metadata_comes_from_top_and_implicit_parents_keep_lower() -> None:
    low = Lower([L({"a/": ufs.Dir(mode=0o700, uid=5), "a/x": b""}), L({"a/y": b""}),
                 L({"a/": ufs.Dir(mode=0o750, uid=7)})])
    a = low.nodes["a"]
    assert (a.mode, a.uid) == (0o750, 7) and "a" in low.merged
    low2 = Lower([L({"a/": ufs.Dir(mode=0o700, uid=5)}), L({"a/y": b""})])
    assert (low2.nodes["a"].mode, low2.nodes["a"].uid) == (0o700, 5)


def test_lookup_cost_does_not_depend_on_depth_of_stack() -> None:
    base = L({f"d/f{i}": b"x" for i in range(10)})
    uppers = [L({f"u{j}/g": b"y"}) for j in range(600)]
    img = ufs.Image.from_layers([base, *uppers])
    assert img.fs.which_layer("/d/f3") == 0 and img.fs.which_layer("/u599/g") == 600
    assert len(img.lower.nodes) == 1 + 1 + 10 + 600 * 2


# --- images -------------------------------------------------------------------------


def test_ids_and_chain_ids_follow_oci() -> None:
    l1, l2 = L({"a": b"1"}), L({"b": b"2"})
    img = ufs.Image.from_layers([l1, l2], config=ufs.ImageConfig(cmd=["sh"], env=["A=1"]))
    c2 = "sha256:" + hashlib.sha256(f"{l1.digest} {l2.digest}".encode()).hexdigest()
    assert img.chain_ids == [l1.digest, c2] == chain_ids(img.diff_ids)
    assert img.id == "sha256:" + hashlib.sha256(img.config_bytes).hexdigest()
    assert img.digest == "sha256:" + hashlib.sha256(img.manifest_bytes).hexdigest()
    assert img.config_json()["rootfs"] == {"type": "layers", "diff_ids": [l1.digest, l2.digest]}
    assert img.config_json()["config"] == {"Env": ["A=1"], "Cmd": ["sh"]}
    assert ufs.Image.from_layers([l1, l2], config=ufs.ImageConfig(cmd=["sh"], env=["A=1"])).digest == img.digest
    assert ufs.Image.from_layers([l2, l1]).chain_ids[-1] != img.chain_ids[-1]


def test_history_must_match_layers() -> None:
    with pytest.raises(ValueError, match="history has 1 non-empty entries for 2 layers"):
        ufs.Image.from_layers([L({}), L({})], history=[ufs.History(created_by="RUN x")])
    img = ufs.Image.from_layers([L({})], history=[ufs.History(created_by="ENV A=1", empty_layer=True),
                                                  ufs.History(created_by="RUN x")])
    assert img.config_json()["history"] == [{"created_by": "ENV A=1", "empty_layer": True}, {"created_by": "RUN x"}]


def test_image_view_is_read_only() -> None:
    img = ufs.Image.from_layers([L({"a": b"1", "d/": None})])
    for op in (lambda: img.fs.write_bytes("/a", b"2"), lambda: img.fs.unlink("/a"), lambda: img.fs.mkdir("/x"),
               lambda: img.fs.chmod("/a", 0o600), lambda: img.fs.rename("/a", "/b"), lambda: img.fs.rmdir("/d")):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EROFS
    with pytest.raises(FileExistsError):
        img.fs.mkdir("/d")  # EEXIST wins over EROFS, as in the kernel


# --- containers ---------------------------------------------------------------------


def test_containers_share_the_image_index_and_copy_nothing() -> None:
    big = L({f"f{i}": b"x" * 100 for i in range(1000)})
    img = ufs.Image.from_layers([big])
    c1, c2 = img.container(), img.container()
    assert c1.overlay.lower is c2.overlay.lower is img.lower
    assert c1.upper == ufs.Layer() and len(c1.upper) == 0
    c1.fs.write_bytes("/f1", b"changed")
    assert c2.fs.read_bytes("/f1") == b"x" * 100 and img.fs.read_bytes("/f1") == b"x" * 100


def test_copy_up_shares_the_lower_bytes_until_written() -> None:
    blob = os.urandom(5 * CHUNK + 7)
    img = ufs.Image.from_layers([L({"big": blob})])
    c = img.container()
    with c.fs.open("/big", "ab") as f:
        f.write(b"!")
    inode = c.overlay.root.entries["big"]
    assert inode.data.base is img.layers[0]["big"].data  # the same bytes object, not a copy
    assert inode.data.private_bytes <= CHUNK
    assert c.fs.read_bytes("/big") == blob + b"!"


def test_docker_diff_semantics() -> None:
    base = L({"etc/": ufs.Dir(), "etc/hostname": b"a", "etc/motd": b"m", "var/cache/x": b"1", "usr/bin/sh": b"sh"})
    c = ufs.Image.from_layers([base]).container()
    c.fs.write_bytes("/etc/hostname", b"b")     # C /etc/hostname; /etc unchanged: not listed
    c.fs.unlink("/usr/bin/sh")                  # D /usr/bin/sh, parent C /usr/bin
    c.fs.makedirs("/srv/www")                   # A /srv, A /srv/www
    c.fs.unlink("/var/cache/x")
    c.fs.rmdir("/var/cache")
    c.fs.mkdir("/var/cache")                    # opaque over a lower dir: D /var/cache
    got = [str(ch) for ch in c.diff()]
    assert got == ["C /etc/hostname", "A /srv", "A /srv/www", "C /usr/bin", "D /usr/bin/sh", "C /var", "D /var/cache"]


def test_commit_freezes_upper_as_new_top_layer() -> None:
    img = ufs.Image.from_layers([L({"a": b"1", "d/x": b"2"})], config=ufs.ImageConfig(cmd=["sh"]))
    c = img.container()
    c.fs.write_bytes("/a", b"changed")
    c.fs.unlink("/d/x")
    other = img.container()
    new = c.commit("my change", author="me", created_by="sh -c edit")
    assert len(new.layers) == 2 and new.layers[0] is img.layers[0]
    assert new.fs.read_bytes("/a") == b"changed" and new.fs.listdir("/d") == []
    assert new.history[-1] == ufs.History(created_by="sh -c edit", comment="my change", author="me")
    assert new.config == img.config and new.id != img.id
    assert img.fs.read_bytes("/a") == b"1" and other.fs.read_bytes("/d/x") == b"2" and len(img.layers) == 1
    c.fs.write_bytes("/a", b"after")  # the container goes on; the new image does not change
    assert new.fs.read_bytes("/a") == b"changed"


def test_commit_of_renamed_directory_writes_full_contents() -> None:
    img = ufs.Image.from_layers([L({"old/x": b"1", "old/sub/y": b"2"})])
    c = img.container(ufs.OverlayOptions(redirect_dir=True))
    c.fs.rename("/old", "/new")
    assert c.upper["new"].redirect == "old"
    layer = c.commit().layers[-1]
    assert "new/x" in layer and "new/sub/y" in layer and layer["old"] is ufs.WHITEOUT
    assert all(getattr(e, "redirect", None) is None for e in layer.values())
    assert ufs.Image.from_layers([img.layers[0], layer]).fs.read_bytes("/new/sub/y") == b"2"


def test_metacopy_counts_no_data_until_written() -> None:
    img = ufs.Image.from_layers([L({"f": b"x" * 1000})])
    meta = img.container(ufs.OverlayOptions(metacopy=True))
    full = img.container()
    for c in (meta, full):
        c.fs.chmod("/f", 0o600)
    assert meta.upper_size() == 0 and full.upper_size() == 1000
    with meta.fs.open("/f", "r+b") as f:
        f.write(b"y")
    assert meta.upper_size() == 1000


def test_fd_outlives_unlink_and_rename() -> None:
    c = ufs.Image.from_layers([L({"lower": b"lower data"})]).container()
    f = c.fs.os_open("/lower", os.O_RDONLY)
    c.fs.unlink("/lower")
    assert f.read() == b"lower data"
    g = c.fs.os_open("/new", os.O_RDWR | os.O_CREAT)
    g.write(b"hello")
    c.fs.rename("/new", "/moved")
    c.fs.unlink("/moved")
    assert g.stat().st_nlink == 0
    g.seek(0)
    assert g.read() == b"hello"
    g.write(b" world")
    g.seek(0)
    assert g.read() == b"hello world"
    f.close()
    g.close()
    with pytest.raises(ValueError):
        g.read()


def test_posix_handle_semantics() -> None:
    fs = ufs.Image.from_layers([L({})]).container().fs
    with fs.os_open("/f", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600) as f:
        f.write(b"abc")
        f.seek(0)
        f.write(b"d")  # O_APPEND: at the end whatever the offset
        assert f.tell() == 4
    assert fs.read_bytes("/f") == b"abcd" and fs.stat("/f").st_mode & 0o777 == 0o600
    with fs.os_open("/f", os.O_RDWR) as f:
        f.seek(10)
        f.write(b"z")
        f.seek(0)
        assert f.read() == b"abcd" + bytes(6) + b"z"
        f.truncate(2)
        assert f.tell() == 11 and fs.stat("/f").st_size == 2
        with pytest.raises(OSError) as e:
            f.seek(-1)
        assert e.value.errno == errno.EINVAL
    with fs.os_open("/f", os.O_RDONLY) as f, pytest.raises(OSError) as e:
        f.write(b"x")
    assert e.value.errno == errno.EBADF
    with pytest.raises(FileExistsError):
        fs.os_open("/f", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    before = fs.stat("/f").st_mtime_ns
    with fs.open("/f", "w") as t:
        t.write("text\n")
    assert fs.read_text("/f") == "text\n" and fs.stat("/f").st_mtime_ns >= before


def test_pread_leaves_the_offset_and_sees_every_state_of_the_data() -> None:
    big = bytes(range(256)) * (CHUNK // 128)  # two chunks
    c = ufs.Image.from_layers([L({"big": big})]).container()
    fs = c.fs
    with fs.os_open("/big", os.O_RDONLY) as r:
        r.seek(5)
        assert bytes(r.pread(10, 100)) == big[100:110] and r.tell() == 5  # a lower file's bytes
        assert bytes(r.pread(10, len(big) - 4)) == big[-4:] and bytes(r.pread(10, len(big) + 1)) == b""
        with fs.os_open("/big", os.O_RDWR) as w:  # copy-up: the handle now reads the upper data
            assert bytes(r.pread(8, CHUNK - 4)) == big[CHUNK - 4 : CHUNK + 4]
            w.seek(CHUNK - 2)
            w.write(b"XYZW")  # spans both chunks
            assert bytes(r.pread(8, CHUNK - 4)) == big[CHUNK - 4 : CHUNK - 2] + b"XYZW" + big[CHUNK + 2 : CHUNK + 4]
            w.truncate(3)
            assert bytes(r.pread(10, 0)) == big[:3]
            w.truncate(6)
            assert bytes(r.pread(10, 0)) == big[:3] + bytes(3)
    assert c.image.fs.read_bytes("/big") == big  # the lower blob itself never changed
    c2 = c.image.container()
    with c2.fs.os_open("/big", os.O_RDWR) as w:  # truncated only: no chunk written
        w.truncate(3)
        w.truncate(6)
        assert bytes(w.pread(10, 0)) == big[:3] + bytes(3)
    with fs.os_open("/big", os.O_WRONLY) as w, pytest.raises(OSError) as e:
        w.pread(1, 0)
    assert e.value.errno == errno.EBADF


def test_threads_do_not_corrupt_the_model() -> None:
    fs = ufs.Image.from_layers([L({"shared/": None})]).container().fs

    def work(n: int) -> None:
        for i in range(200):
            p = f"/shared/t{n}-{i}"
            fs.write_bytes(p, p.encode())
            if i % 3 == 0:
                fs.rename(p, p + ".r")
            if i % 5 == 0:
                fs.unlink(p + ".r" if i % 3 == 0 else p)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = set(fs.listdir("/shared"))
    expected = set()
    for n in range(8):
        for i in range(200):
            if i % 5 == 0:
                continue
            expected.add(f"t{n}-{i}" + (".r" if i % 3 == 0 else ""))
    assert names == expected
    assert all(fs.read_bytes(f"/shared/{x}") == f"/shared/{x.removesuffix('.r')}".encode() for x in names)


# --- copy-on-write data ---------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(base=st.binary(max_size=3 * CHUNK // 2), ops=st.lists(st.tuples(
    st.sampled_from(["write", "truncate"]), st.integers(0, 3 * CHUNK), st.binary(max_size=CHUNK + 3)), max_size=12))
def test_data_behaves_as_a_bytearray(base: bytes, ops: list[tuple[str, int, bytes]]) -> None:
    d, ref = Data(base), bytearray(base)
    for op, pos, b in ops:
        if op == "write":
            d.write(pos, b)
            if b:
                if pos > len(ref):
                    ref.extend(bytes(pos - len(ref)))
                ref[pos:pos + len(b)] = b
        else:
            d.truncate(pos)
            ref[:] = ref[:pos] + bytes(max(0, pos - len(ref)))
        assert d.size == len(ref)
    assert d.freeze() == bytes(ref)
    assert d.read(CHUNK - 3, 10) == bytes(ref[CHUNK - 3:CHUNK + 7])


# --- a container from an existing upper layer ------------------------------------------

_OPS = st.lists(st.tuples(
    st.sampled_from(["write", "unlink", "mkdir", "rmdir", "rename", "symlink", "link", "chmod", "setxattr"]),
    st.sampled_from(["/a", "/b", "/a/b", "/b/a", "/c", "/a/c"]),
    st.sampled_from(["/a", "/b", "/a/b", "/b/a", "/c", "/a/c"])), max_size=15)


@settings(max_examples=150, deadline=None)
@given(image=ust.images(max_layers=3), ops=_OPS,
       redirect=st.booleans())
def test_container_from_its_upper_shows_the_same_view(image: ufs.Image, ops: list, redirect: bool) -> None:
    from unionfs_sim.testing.compare import snapshot

    opts = ufs.OverlayOptions(redirect_dir=redirect)
    c = image.container(opts)
    calls = {
        "write": lambda p, q: c.fs.write_bytes(p, q.encode()), "unlink": lambda p, q: c.fs.unlink(p),
        "mkdir": lambda p, q: c.fs.mkdir(p), "rmdir": lambda p, q: c.fs.rmdir(p),
        "rename": lambda p, q: c.fs.rename(p, q), "symlink": lambda p, q: c.fs.symlink(q, p),
        "link": lambda p, q: c.fs.link(p, q), "chmod": lambda p, q: c.fs.chmod(p, 0o700),
        "setxattr": lambda p, q: c.fs.setxattr(p, "user.x", q.encode()),
    }
    for op, p, q in ops:
        try:
            calls[op](p, q)
        except OSError:
            pass
    again = ufs.Container.from_upper(image, c.upper, opts)
    assert snapshot(again.fs) == snapshot(c.fs)
    assert layer_items(again.upper) == layer_items(c.upper)
    again.fs.write_bytes("/new-after-load", b"1")  # it goes on writing
    assert again.fs.read_bytes("/new-after-load") == b"1"


def layer_items(layer: ufs.Layer) -> dict:
    from unionfs_sim.testing.compare import layer_shape

    return layer_shape(layer)


def test_config_fields_the_model_does_not_know_survive_a_commit() -> None:
    """Healthcheck, Shell, os.version ... from a loaded image are kept in the committed image."""
    doc = {
        "architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1",
        "config": {"Cmd": ["sh"], "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30000000000},
                   "Shell": ["/bin/bash", "-c"], "ArgsEscaped": True},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    config = ufs.ImageConfig.from_json(doc)
    assert dict(config.extra) == {"ArgsEscaped": "true",
                                  "Healthcheck": '{"Interval": 30000000000, "Test": ["CMD", "true"]}',
                                  "Shell": '["/bin/bash", "-c"]'}
    image = ufs.Image.from_layers([L({"a": b"1"})], config)
    c = image.container()
    c.fs.write_bytes("/b", b"2")
    out = c.commit().config_json()
    assert out["config"]["Healthcheck"] == doc["config"]["Healthcheck"]
    assert out["config"]["Shell"] == ["/bin/bash", "-c"] and out["config"]["Cmd"] == ["sh"]
    assert out["os.version"] == "10.0.17763.1"
    assert ufs.ImageConfig.from_json(out) == config
