# The rootfs of the managed freeflow plugin: Debian's Python packages plus this project.
FROM debian:bookworm-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-flask gunicorn python3-pyroute2 python3-docker \
      python3-pip python3-setuptools python3-wheel iptables iproute2 \
 && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md /src/
COPY freeflow /src/freeflow
COPY plugin /src/plugin
COPY router /src/router
COPY shm /src/shm
COPY client /src/client
COPY config /src/config
COPY bench /src/bench
RUN pip3 install --no-deps --no-build-isolation --break-system-packages /src \
 && rm -rf /src /root/.cache \
 && mkdir -p /run/docker/plugins /var/lib/freeflow

ENTRYPOINT ["freeflow", "plugin"]
