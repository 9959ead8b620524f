"""The lab: several Docker hosts on this machine, one dockerd per network namespace, joined in a swarm.

`freeflow lab up|down|status|exec` drives it (cli.py); lifecycle.py composes the steps the other modules do.
"""
