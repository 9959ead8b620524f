#!/usr/bin/env bash
# Builds the managed plugin `freeflow` from the Dockerfile and config.json, and enables it.
# Rebuilds only when the sources changed; no registry is involved (classic builder, local base image).
set -euo pipefail
cd "$(dirname "$0")/.."
name=${FREEFLOW_PLUGIN_NAME:-freeflow/driver}
out=build/plugin
hash=$(find Dockerfile config.json pyproject.toml freeflow plugin router shm client config bench orchestrator lab \
           -type f \( -name '*.py' -o -name '*.c' -o -name '*.h' -o -name Makefile -o -name '*.yml' -o -name '*.sh' \
           -o -name Dockerfile -o -name '*.json' -o -name '*.toml' \) 2>/dev/null | sort | xargs cat | sha256sum | cut -c1-16)

if docker plugin inspect "$name" >/dev/null 2>&1 && [ "$(cat "$out/.hash" 2>/dev/null)" = "$hash" ]; then
    echo "plugin $name is up to date ($hash)"
else
    echo "building plugin $name ($hash)"
    previous=$(docker image inspect -f '{{.Id}}' freeflow-plugin-rootfs 2>/dev/null || true)
    DOCKER_BUILDKIT=0 docker build -q --network host -t freeflow-plugin-rootfs . >/dev/null
    # The orchestrator runs from the same image (config/stack.yml).
    docker tag freeflow-plugin-rootfs freeflow-orchestrator:latest
    # The image of the last build, untagged now, unless a container (an orchestrator task, even stopped) uses it.
    if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' freeflow-plugin-rootfs)" ]; then
        docker image rm "$previous" >/dev/null 2>&1 || true
    fi
    rm -rf "$out" && mkdir -p "$out/rootfs"
    id=$(docker create freeflow-plugin-rootfs)
    docker export "$id" | tar -x -C "$out/rootfs"
    docker rm "$id" >/dev/null
    cp config.json "$out/"
    if docker plugin inspect "$name" >/dev/null 2>&1; then
        docker plugin disable -f "$name" >/dev/null 2>&1 || true
        docker plugin rm -f "$name" >/dev/null
    fi
    docker plugin create "$name" "$out" >/dev/null
    echo "$hash" > "$out/.hash"
fi
mkdir -p /var/lib/freeflow
if [ "$(docker plugin inspect -f '{{.Enabled}}' "$name")" != "true" ]; then
    docker plugin enable "$name" >/dev/null
fi
echo "plugin $name enabled"
