"""The image YAML, split while it is being reorganised: everything from ``reader``."""

from pkgtool.spec.image.reader import *  # noqa: F403
