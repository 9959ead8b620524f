#!/bin/sh
# Runs the dockerd of one lab host. freeflow.lab.hosts starts it as
#   unshare --mount --uts --propagation private sh dockerd.sh NAME DIR FOLDER:PATH...
# so every mount made here stays in the host's own mount namespace. Each FOLDER (under DIR) is mounted over
# PATH: dockerd and the freeflow plugin use those paths whatever dockerd's --exec-root says.
#
# `ip netns exec` cannot run dockerd: it remounts /sys and the cgroup mounts under it vanish. So the cgroups
# are set aside, the network namespace entered with nsenter, a fresh sysfs (showing this namespace's devices)
# mounted on /sys and the cgroups put back.
set -eu

if [ "$1" = --in-netns ]; then
    dir=$2
    mount -t sysfs sysfs /sys
    mount --rbind "$dir/cgroup" /sys/fs/cgroup
    umount -l "$dir/cgroup"
    exec dockerd --config-file "$dir/daemon.json" --data-root "$dir/docker" --exec-root "/run/docker-$3" \
        --pidfile "$dir/dockerd.pid" --host "unix:///run/docker-$3.sock"
fi

name=$1
dir=$2
shift 2
hostname "$name"
# This namespace starts as a copy of the machine's mounts: drop the copies of the main dockerd's (container
# roots, sandbox namespaces) so this host never keeps them alive.
findmnt -rn -o TARGET | grep -E '^(/var/lib/docker|/run/docker|/run/containerd)(/|$)' | sort -r |
    while read -r target; do umount -l "$target"; done
for shadow in "$@"; do
    mkdir -p "$dir/${shadow%%:*}" "${shadow#*:}"
    mount --bind "$dir/${shadow%%:*}" "${shadow#*:}"
done
mkdir -p "$dir/cgroup"
mount --rbind /sys/fs/cgroup "$dir/cgroup"
exec nsenter --net="/run/netns/$name" sh "$0" --in-netns "$dir" "$name"
