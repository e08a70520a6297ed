"""Run built images: ``pkgtool run qemu``."""
