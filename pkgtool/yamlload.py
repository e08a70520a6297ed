"""Load YAML while remembering where every value came from.

Schema errors must name ``file:line`` (and the field path), so the loader keeps the start
line of every node, keyed by its path of mapping keys and list indexes.  Values come back as
plain ``dict``/``list``/scalars; duplicate mapping keys are errors (PyYAML silently keeps the
last one, which hides mistakes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pkgtool.errors import UsageError

PathKey = tuple[str | int, ...]


@dataclass
class YamlDoc:
    """A parsed YAML document and the line of each of its nodes."""

    source: str
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)

    def where(self, path: PathKey) -> str:
        """``file:line`` of the node at ``path``, or of its nearest ancestor that has one."""
        probe = tuple(path)
        while probe not in self.lines and probe:
            probe = probe[:-1]
        line = self.lines.get(probe)
        return f"{self.source}:{line}" if line else self.source

    def error(self, path: PathKey, message: str) -> UsageError:
        """A one-line error naming the file, line and field path."""
        dotted = format_path(path)
        prefix = f"{self.where(path)}: "
        return UsageError(f"{prefix}{dotted + ': ' if dotted else ''}{message}")


def format_path(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _convert(node: yaml.Node, path: PathKey, doc: YamlDoc, constructor: yaml.SafeLoader) -> Any:
    doc.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) or key is None:
                raise UsageError(f"{doc.source}:{key_node.start_mark.line + 1}: mapping keys must be scalars")
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                raise UsageError(f"{doc.source}:{key_node.start_mark.line + 1}: {format_path((*path, key))}: duplicate key")
            out[key] = _convert(value_node, (*path, key), doc, constructor)
            # Point at the key's line: "image:" is where a user looks, not its value's line.
            doc.lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), doc, constructor) for i, item in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


def parse_yaml(text: str, source: str) -> YamlDoc:
    """Parse one YAML document from ``text``; ``source`` names it in errors."""
    doc = YamlDoc(source=source, data=None)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            doc.data = _convert(node, (), doc, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise UsageError(f"{source}{line}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return doc


def load_yaml(path: Path, *, display: str | None = None) -> YamlDoc:
    """Read and parse ``path``; errors name it as ``display`` (default: the path given)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{display or path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{display or path}: cannot read: {exc}") from None
    return parse_yaml(text, display or str(path))
