"""What runs inside application containers; standard library only.

install() accelerates every TCP/IPv4 socket of a Python program, as does running it with
`PYTHONPATH=/run/freeflow/python python3 -m freeflow.client.run app.py`; api.Socket, create_connection
and create_server accelerate chosen sockets only.
"""

from freeflow.client.api import Socket, create_connection, create_server
from freeflow.client.channel import Channel, ChannelListener
from freeflow.client.errors import ChannelMemoryCap, ClientError
from freeflow.client.methods import is_grafted
from freeflow.client.patching import install, uninstall

__all__ = ["Channel", "ChannelListener", "ChannelMemoryCap", "ClientError", "Socket", "create_connection",
           "create_server", "install", "is_grafted", "uninstall"]
