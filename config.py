"""Typed configuration shared by every command: frozen dataclasses, overrides by field name, and
their JSON form. No TensorFlow, no absl.

A command reads its flags once, at its entry point, into a tree of frozen dataclasses (e.g.
:class:`training.config.TrainConfig`: data, schedule, loop and the paper's own recipe) and passes
that object down; nothing below the commands reads flags. Every leaf field of a tree has a name
unique in the tree, the name of the flag that sets it, so that :func:`override` can apply
``{flag name: value}`` to the right branch. A preset is a function from config to config.

``run_config.json`` records :func:`to_dict` of a run's configuration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line naming the setting (its flag)."""


def is_config(value) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def leaves(config) -> Iterator[tuple[str, Any]]:
    """``(name, value)`` of every leaf field of a config tree, depth first in field order."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if is_config(value):
            yield from leaves(value)
        else:
            yield field.name, value


def leaf_names(config) -> list[str]:
    """The leaf field names of ``config`` (each is unique in a tree, see :func:`check_unique`)."""
    return [name for name, _ in leaves(config)]


def check_unique(config) -> None:
    """Raises ``ValueError`` if two leaves of the tree share a name (an override would be
    ambiguous)."""
    names = leaf_names(config)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"config fields appear more than once: {', '.join(repeated)}")


def get(config, name: str):
    """The value of the leaf ``name`` anywhere in the tree; ``KeyError`` if there is none."""
    for leaf, value in leaves(config):
        if leaf == name:
            return value
    raise KeyError(name)


def override(config, values: Mapping[str, Any]):
    """A copy of ``config`` with the leaves named in ``values`` replaced, wherever they are in
    the tree; ``KeyError`` naming a value that no leaf takes."""
    unknown = set(values) - set(leaf_names(config))
    if unknown:
        raise KeyError(f"no config field {', '.join(sorted(unknown))}")
    return _override(config, values)


def _override(config, values):
    changes = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if is_config(value):
            replaced = _override(value, values)
            if replaced is not value:
                changes[field.name] = replaced
        elif field.name in values:
            changes[field.name] = values[field.name]
    return dataclasses.replace(config, **changes) if changes else config


def to_dict(config) -> dict:
    """The JSON-able nested dict of a config tree (tuples become lists)."""
    return dataclasses.asdict(config)
