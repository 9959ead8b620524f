#!/usr/bin/env bash
# Builds the images FreeFlow needs without any registry: the base `debian:bookworm-slim` from a
# debootstrapped rootfs (so the Dockerfiles build unchanged), then the tools image used by tests and bench.
set -euo pipefail
cd "$(dirname "$0")/.."
base=debian:bookworm-slim
if ! docker image inspect "$base" >/dev/null 2>&1; then
    echo "building $base with debootstrap (a few minutes)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/log" 2>&1 \
        || { tail -20 "$work/log" >&2; exit 1; }
    tar -C "$work/rootfs" -c . | docker import -c 'CMD ["bash"]' - "$base" >/dev/null
fi
hash=$(sha256sum images/tools/Dockerfile | cut -c1-16)
if [ "$(docker image inspect -f '{{index .Config.Labels "freeflow.hash"}}' freeflow-tools 2>/dev/null)" != "$hash" ]; then
    echo "building freeflow-tools"
    DOCKER_BUILDKIT=0 docker build -q --network host --label "freeflow.hash=$hash" -t freeflow-tools images/tools >/dev/null
fi
echo "images ready: $base, freeflow-tools"
