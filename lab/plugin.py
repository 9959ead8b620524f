"""The managed plugin freeflow/driver on a lab host, created from the build folder that scripts/build-plugin.sh
makes (build/plugin: config.json and rootfs), exactly as on a real host."""

from __future__ import annotations

from pathlib import Path

from freeflow.lab.command import run
from freeflow.lab.docker import docker
from freeflow.lab.errors import LabError
from freeflow.lab.layout import Host

NAME = "freeflow/driver"
PROJECT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = PROJECT / "scripts" / "build-plugin.sh"
DEFAULT_BUILD = PROJECT / "build" / "plugin"


def build_folder(folder: Path | None) -> Path:
    """The plugin build to install: `folder`, or the project's, built first with build-plugin.sh if missing."""
    if folder is None:
        folder = DEFAULT_BUILD
        if not (folder / "config.json").exists() and BUILD_SCRIPT.exists():
            run([str(BUILD_SCRIPT)], timeout=900)
    if not (folder / "config.json").exists() or not (folder / "rootfs").is_dir():
        raise LabError(f"no plugin build in {folder} (config.json and rootfs/): run scripts/build-plugin.sh "
                       "or pass --plugin-dir")
    return folder


def install(host: Host, folder: Path, settings: dict[str, str]) -> None:
    """Create the plugin on `host`, set `settings` (FREEFLOW_* variables of config.json) and enable it."""
    docker(host, "plugin", "create", NAME, str(folder), timeout=600)
    if settings:
        docker(host, "plugin", "set", NAME, *(f"{name}={value}" for name, value in settings.items()))
    docker(host, "plugin", "enable", NAME)


def enabled(host: Host) -> bool:
    return docker(host, "plugin", "inspect", "--format", "{{.Enabled}}", NAME, timeout=10) == "true"
