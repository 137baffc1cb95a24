"""The core package needs attrs (and click for the CLI) only: no hypothesis, no fusepy."""

from __future__ import annotations

import subprocess
import sys


def test_core_imports_without_optional_dependencies() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('hypothesis', 'fuse', 'zstandard', 'rich'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import unionfs_sim as ufs, unionfs_sim.testing\n"
        "img = ufs.Image.from_layers([ufs.Layer.from_dict({'a': b'x'})])\n"
        "assert img.fs.read_bytes('/a') == b'x'\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('hypothesis', 'fuse', 'zstandard', 'rich')]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_doctests_of_pure_modules() -> None:
    import doctest

    import unionfs_sim.paths

    result = doctest.testmod(unionfs_sim.paths)
    assert result.attempted > 5 and result.failed == 0


def test_the_drop_in_imports_only_what_it_uses() -> None:
    """``unionfs-sim-fuse`` starts fast: neither build/, analysis/, serve/, the registry nor the formats load."""
    code = (
        "import sys, unionfs_sim.cli.fuse_overlayfs\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in ([ 'unionfs_sim', x] for x in\n"
        "             ('build', 'analysis', 'serve', 'registry', 'formats')))\n"
        "assert not bad, bad\n"
        "import unionfs_sim as ufs\n"
        "assert ufs.Registry.__name__ == 'Registry' and ufs.oci.__name__.endswith('oci')  # loaded on use\n"
        "from unionfs_sim.cli import main\n"
        "assert 'build' in main.list_commands(None) and main.get_command(None, 'build').name == 'build'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
