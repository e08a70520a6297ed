"""The image YAML (LinuxKit's ``linuxkit build`` schema) as typed, frozen values.

* :mod:`.model`: the values;
* :mod:`.reader`: one document into the model, errors at ``file:line``;
* :mod:`.merge`: several files as one (LinuxKit's merge rules), reference rewriting.

The names below are the package's public interface.
"""

from pkgtool.spec.image.merge import (
    image_references,
    load_image_spec,
    merge_specs,
    to_data,
    with_image,
)
from pkgtool.spec.image.model import (
    LABEL,
    BindNS,
    Device,
    FileEntry,
    Id,
    IdMapping,
    ImageConfig,
    ImageEntry,
    ImageSpec,
    InitImage,
    Interface,
    KernelConfig,
    Mount,
    Origin,
    Runtime,
    Volume,
)
from pkgtool.spec.image.reader import parse_image_spec, parse_label

__all__ = [
    "LABEL", "BindNS", "Device", "FileEntry", "Id", "IdMapping", "ImageConfig", "ImageEntry", "ImageSpec",
    "InitImage", "Interface", "KernelConfig", "Mount", "Origin", "Runtime", "Volume", "image_references",
    "load_image_spec", "merge_specs", "parse_image_spec", "parse_label", "to_data", "with_image",
]
