"""Paths of the host seen from inside the plugin: symlinks resolve inside the host's root, not ours."""

import os

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
