"""Reading `ss` for listening ports, and probe modules turned into commands for a container's python3."""

from __future__ import annotations

import subprocess
import sys

from freeflow.bench import probe_connect
from freeflow.bench.programs import listening_ports, probe


def test_listening_ports_reads_ipv4_ipv6_and_wildcard_addresses():
    ss = ("LISTEN 0      10       0.0.0.0:23457      0.0.0.0:*\n"
          "LISTEN 0      4096           *:23456            *:*\n"
          "LISTEN 0      128         [::]:22              [::]:*\n"
          "LISTEN 0      5       127.0.0.1:40001      0.0.0.0:*\n")
    assert listening_ports(ss) == {23457, 23456, 22, 40001}


def test_listening_ports_of_nothing():
    assert listening_ports("") == set()


def test_a_probe_runs_as_a_script_from_its_source():
    command = probe(probe_connect, "no-such-mode")
    assert command[:2] == ["python3", "-c"] and command[-1] == "no-such-mode"
    done = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and "usage: probe_connect.py" in done.stderr
