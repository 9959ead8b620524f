#!/usr/bin/env bash
# Installs what FreeFlow needs on a Debian host: the Docker engine (Debian's docker.io), debootstrap,
# iptables, etcd (the orchestrator's etcd store is tested against it), a C compiler and make (the preload
# library's tests and the benchmark's C ring build on the host), and the Python package with its test tools.
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v etcd >/dev/null || need+=(etcd-server)
command -v gcc >/dev/null || need+=(gcc)
command -v make >/dev/null || need+=(make)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi
# Install when missing or when the installed package points at another checkout. Asked from / so that this
# folder's own freeflow/ does not answer for an install that is missing, or that maps freeflow.router elsewhere.
where=$(cd / && python3 -c 'import freeflow.router, os, pytest, hypothesis, matplotlib
print(os.path.dirname(os.path.dirname(freeflow.router.__file__)))' 2>/dev/null || true)
if [ "$where" != "$PWD" ]; then
    echo "installing the freeflow Python package"
    python3 -m pip install -q -e '.[test]'
fi
