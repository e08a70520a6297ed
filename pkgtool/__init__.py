"""pkgtool: build, sign and assemble lean container-based Linux systems."""

__version__ = "0.1.0"
