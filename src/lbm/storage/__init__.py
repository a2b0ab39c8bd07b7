"""Artifact storage: URLs, the artifact tree, and verified transfers (fsspec)."""
