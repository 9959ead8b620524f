#!/usr/bin/env bash
# Removes what `make up` made: freeflow networks, the plugin and the images it built. Docker stays.
set -uo pipefail
name=${FREEFLOW_PLUGIN_NAME:-freeflow/driver}
docker info >/dev/null 2>&1 || { echo "dockerd is not running: nothing to remove"; exit 0; }
for net in $(docker network ls -q --filter driver=freeflow) $(docker network ls -q --filter "driver=$name:latest"); do
    for c in $(docker network inspect -f '{{range $id, $_ := .Containers}}{{$id}} {{end}}' "$net"); do
        docker network disconnect -f "$net" "$c"
    done
    docker network rm "$net"
done
docker plugin disable -f "$name" 2>/dev/null
docker plugin rm -f "$name" 2>/dev/null
docker image rm freeflow-plugin-rootfs freeflow-tools 2>/dev/null
rm -rf build/plugin
echo "freeflow removed (state in /var/lib/freeflow kept)"
