"""Accelerates a whole Python program: patches socket.socket so its TCP/IPv4 connections between
containers are grafted, while the sockets keep behaving (and answering addresses) as before.
"""

from __future__ import annotations

import os
import socket

from freeflow.client import methods
from freeflow.client.api import Socket

# Set in a container to leave every socket alone, whatever calls install().
DISABLE_ENV = "FREEFLOW_DISABLE"
# What socket.socket defined itself (the rest it inherits from _socket.socket), to restore it exactly.
_OWN = {name: socket.socket.__dict__.get(name) for name in methods.REPLACEMENTS}


def install() -> bool:
    """Patch socket.socket; True when the patches are in place, False when FREEFLOW_DISABLE is set."""
    if os.environ.get(DISABLE_ENV, "").lower() in ("1", "true", "yes", "on"):
        return False
    for name, method in methods.REPLACEMENTS.items():
        setattr(socket.socket, name, method)
    return True


def uninstall() -> None:
    """Put socket.socket back and end its listeners' registrations; grafted connections stay grafted."""
    for name, method in methods.REPLACEMENTS.items():
        if socket.socket.__dict__.get(name) is not method:
            continue  # someone patched it after us, or it was never installed
        original = _OWN[name]
        if original is None:
            delattr(socket.socket, name)
        else:
            setattr(socket.socket, name, original)
    for sock, entry in list(methods.listeners.items()):
        if not isinstance(sock, Socket):  # its accept() no longer grafts: the router must not wait for it
            entry.close()
            del methods.listeners[sock]
