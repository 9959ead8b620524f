"""The freeflow Docker network driver: libnetwork's remote protocol over HTTP, bridges and veths in the kernel."""
