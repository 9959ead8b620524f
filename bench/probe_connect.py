"""Connection set-up probe, run with a container's python3: `accept PORT ADDRESS` serves, `connect` measures.

`connect HOST PORT COUNT` opens and closes COUNT connections one after the other and prints the time of each
connect() call as JSON. Under the freeflow preload library libc's connect() and accept() are intercepted, so
the grafting of each connection is part of what is timed. Standard library only.
"""

from __future__ import annotations

import json
import socket
import sys
import time


def serve(address: str, port: int) -> None:
    """Accept connections and close them at once, until killed."""
    with socket.create_server((address, port), backlog=128) as server:
        while True:
            conn, _ = server.accept()
            conn.close()


def connect_times(host: str, port: int, count: int) -> list[int]:
    """Nanoseconds of each of `count` blocking connect() calls to host:port."""
    times = []
    for _ in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            started = time.perf_counter_ns()
            sock.connect((host, port))
            times.append(time.perf_counter_ns() - started)
    return times


def main(argv: list[str]) -> None:
    if argv[:1] == ["accept"] and len(argv) == 3:
        serve(argv[2], int(argv[1]))
    elif argv[:1] == ["connect"] and len(argv) == 4:
        print(json.dumps({"connect_ns": connect_times(argv[1], int(argv[2]), int(argv[3]))}))
    else:
        sys.exit("usage: probe_connect.py accept PORT ADDRESS | connect HOST PORT COUNT")


if __name__ == "__main__":
    main(sys.argv[1:])
