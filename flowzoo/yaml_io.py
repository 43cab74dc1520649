"""The one place flowzoo reads and writes YAML: PyYAML's safe loader with YAML 1.2's float syntax.

PyYAML implements YAML 1.1, whose float pattern needs a dot and a signed exponent, so ``3e-4``,
``1e6`` and ``5E-3`` come back as strings and ``--set train.lr=3e-4`` failed the float check.
``Loader`` adds a resolver for every number a researcher writes (``1e-4``, ``1e6``, ``-3E+2``,
``.5``, ``2.``); ``Dumper`` quotes a string that would now read as a float, so a config written
by flowzoo reads back equal. Bools, ints, nulls and other strings resolve exactly as before.
Both stay "safe": no tag constructs a Python object. A key given twice in one mapping is an error
(PyYAML would keep the last value silently); the callers add the file's name to the message.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# A decimal number with an exponent, or with a dot; YAML 1.1's forms (1_000.5, 1:30.0, .inf, .nan) stay.
FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+
    |[-+]?\.[0-9]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)
FIRST_CHARS = list("-+0123456789.")


class Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-4, 1e6, -3E+2 as floats (YAML 1.2 numbers) and refuses duplicate keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` keys may be overridden, as intended
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (first on line "
                                                                f"{seen[key]}, again on line {line}); keep one",
                                                                key_node.start_mark)
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeLoader's own error names it
                    continue
        return super().construct_mapping(node, deep)


class Dumper(yaml.SafeDumper):
    """SafeDumper that quotes strings Loader would read as floats."""


for _cls in (Loader, Dumper):
    # Copy the inherited table first: add_implicit_resolver would otherwise mutate SafeLoader's own.
    _cls.yaml_implicit_resolvers = {
        key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
        for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT, FIRST_CHARS)


def load(text: str) -> Any:
    """Parse YAML text (safe: plain data only)."""
    return yaml.load(text, Loader=Loader)


def dump(value: Any, **kwargs: Any) -> str:
    return yaml.dump(value, Dumper=Dumper, **kwargs)
