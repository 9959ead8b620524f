"""The images every lab host gets from the machine's dockerd (no registry is reachable): docker save, then load."""

from __future__ import annotations

from collections.abc import Sequence

from freeflow.lab.command import run, succeeds
from freeflow.lab.docker import docker
from freeflow.lab.errors import LabError
from freeflow.lab.layout import IMAGES_TAR, Host

IMAGES = ("freeflow-tools", "debian:bookworm-slim")


def save(wanted: Sequence[str] = IMAGES) -> None:
    """Save `wanted` images from the machine's dockerd into one archive (reading them is all it does there)."""
    missing = [image for image in wanted if not succeeds(["docker", "image", "inspect", image])]
    if missing:
        raise LabError(f"this machine's dockerd lacks {', '.join(missing)}: build them with `make up` "
                       "(scripts/build-images.sh)")
    IMAGES_TAR.parent.mkdir(parents=True, exist_ok=True)
    run(["docker", "save", "--output", str(IMAGES_TAR), *wanted], timeout=300)


def load(host: Host) -> None:
    docker(host, "load", "--quiet", "--input", str(IMAGES_TAR), timeout=300)


def discard() -> None:
    IMAGES_TAR.unlink(missing_ok=True)
