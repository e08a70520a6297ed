"""Assemble an OS image: the file tree from image layers, OCI runtime bundles, archive writers."""
