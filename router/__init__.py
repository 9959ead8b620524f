"""The per-host router: control sockets in containers and the accelerated transports (issue 3)."""
