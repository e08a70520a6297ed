"""Output formats: one small module each, a function from the assembled image to files.

Every writer gets a :class:`~.base.FormatInput` (the tree, the kernel, the compressed
initrd and the command line) and a staging directory; it writes its files there under their
final names and returns them.  :mod:`pkgtool.assemble.image_build` renames them into the
output directory only when every requested format has succeeded.  :mod:`.registry` names
the formats; :mod:`.hosttools` runs the host tools some of them need.

Determinism is each writer's job: every timestamp is ``mtime`` (``SOURCE_DATE_EPOCH``), and
ids that tools would otherwise draw at random (volume serials, GPT GUIDs) are derived from
the image name (:mod:`.stable_ids`), so a rebuild gives the same bytes.

This package's ``__init__`` imports nothing: the writers import their helpers from the
sibling modules, never from the package, so no module imports the package that imports it.
"""
