"""``--set section.field=value`` overrides of a :class:`~ufssd.config.DetectorConfig`.

Values are JSON (``0.5``, ``true``, ``[16, 32, 64]``, ``"light"``), or Python literals
(``True``, ``(1, 2)``), or else taken as a plain string (``model.backbone=light``). Lists become
tuples; a scalar given for a tuple field becomes a 1-tuple (``model.ffmm_levels=0``). Unknown
sections or fields raise ``ValueError`` naming them.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from typing import Any

from ufssd.config import DetectorConfig, config_from_dict, config_to_dict

__all__ = ["parse_value", "apply_overrides"]


def parse_value(text: str) -> Any:
    text = text.strip()
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    if text.lower() in ("none", "null"):
        return None
    return text


def apply_overrides(cfg: DetectorConfig, overrides: Iterable[str]) -> DetectorConfig:
    """``cfg`` with each ``"section.field=value"`` (or top-level ``"name=value"``) applied."""
    data = config_to_dict(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected section.field=value")
        value = parse_value(raw)
        parts = key.split(".")
        node: Any = data
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
                raise ValueError(f"--set {item!r}: unknown config section {part!r} (sections: {_sections(data)})")
            node = node[part]
        name = parts[-1]
        if name not in node:
            raise ValueError(f"--set {item!r}: unknown field {name!r}; known: {', '.join(sorted(node))}")
        current = node[name]
        if isinstance(current, dict):
            raise ValueError(f"--set {item!r}: {key!r} is a section, set its fields (e.g. {key}.FIELD=...)")
        if isinstance(current, (tuple, list)) and value is not None and not isinstance(value, (tuple, list)):
            value = (value,)
        if isinstance(value, list):
            value = tuple(value)
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        node[name] = value
    return config_from_dict(data)


def _sections(data: dict) -> str:
    return ", ".join(k for k, v in data.items() if isinstance(v, dict))
