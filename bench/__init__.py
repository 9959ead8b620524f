"""Benchmarks: freeflow against Docker's own networks, measured side by side in one run."""
