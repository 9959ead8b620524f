"""Paths of the host seen from inside the plugin: symlinks resolve inside the host's root, not ours."""

import os
import subprocess
import sys

from freeflow.router.netns import in_root


def test_absolute_symlinks_resolve_inside_the_root(tmp_path):
    (tmp_path / "run" / "docker" / "netns").mkdir(parents=True)
    (tmp_path / "var").mkdir()
    os.symlink("/run", tmp_path / "var" / "run")
    assert in_root(str(tmp_path), "/var/run/docker/netns/abc") == f"{tmp_path}/run/docker/netns/abc"


def test_relative_symlinks_and_dots(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    os.symlink("b", tmp_path / "a" / "link")
    assert in_root(str(tmp_path), "/a/link/../b/./x") == f"{tmp_path}/a/b/x"


def test_no_prefix_is_the_path_itself():
    assert in_root("", "/var/run/x") == "/var/run/x"


def test_auto_finds_the_hosts_root_from_a_mount_namespace_of_its_own(tmp_path):
    """As inside the managed plugin: the process has a mount namespace of its own, its parent the host's. A
    file made only in the child's namespace (a tmpfs over tmp_path) is not under the root `auto` finds."""
    (tmp_path / "marker").write_text("host")
    code = ("import os, sys\nfrom freeflow.router.netns import host_root, in_root\n"
            f"os.system('mount -t tmpfs none {tmp_path}')\n"
            f"open('{tmp_path}/marker', 'w').write('own')\n"
            "root = host_root('auto')\n"
            f"print(root, os.getppid(), open(in_root(root, '{tmp_path}/marker')).read())\n")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    root, parent, seen = done.stdout.split()
    assert (root, seen) == (f"/proc/{parent}/root", "host")
    assert (tmp_path / "marker").read_text() == "host"

