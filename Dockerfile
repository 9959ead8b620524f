# The rootfs of the managed freeflow plugin (and of the orchestrator service): Debian's Python packages,
# this project, and the preload library containers mount from /run/freeflow.

FROM debian:bookworm-slim AS preload
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev make \
 && rm -rf /var/lib/apt/lists/*
COPY client/preload /src/client/preload
RUN make -C /src/client/preload

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-flask gunicorn python3-pyroute2 python3-docker \
      python3-pip python3-setuptools python3-wheel iptables iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
COPY --from=preload /src/client/preload/libfreeflow.so /src/client/preload/libfreeflow.so
RUN pip3 install --no-deps --no-build-isolation --break-system-packages /src \
 && rm -rf /src /root/.cache \
 && mkdir -p /run/docker/plugins /var/lib/freeflow

ENTRYPOINT ["freeflow", "plugin"]
