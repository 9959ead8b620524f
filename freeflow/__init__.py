"""FreeFlow: a Docker network driver with fast paths between containers of one application."""

__version__ = "0.1.0"
