"""Shared helpers for every herd package: configuration, atomic writes, paths and the test macro's runner."""
