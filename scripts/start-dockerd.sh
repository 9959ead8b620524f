#!/usr/bin/env bash
# Starts dockerd when none answers (logs in /var/log/freeflow-dockerd.log) and waits until it does.
set -euo pipefail
if docker info >/dev/null 2>&1; then
    exit 0
fi
echo "starting dockerd"
if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    systemctl start docker
else
    DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 nohup dockerd >>/var/log/freeflow-dockerd.log 2>&1 &
fi
for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && exit 0
    sleep 1
done
echo "dockerd did not start within 60 s; see /var/log/freeflow-dockerd.log" >&2
exit 1
