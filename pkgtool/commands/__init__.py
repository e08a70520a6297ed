"""Command groups; each module exposes register(subparsers) and imports nothing heavy."""
