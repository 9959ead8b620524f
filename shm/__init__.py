"""Shared-memory rings between containers; standard library only."""
