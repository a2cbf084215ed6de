"""``ManifestError`` and the one-line rendering of validation problems."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic_core import ErrorDetails

from consumer.manifest._grammar import json_type, show
from ocicore.errors import InvalidInputError

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class ManifestError(InvalidInputError):
    """A release manifest is unreadable, breaks schema v1, or is not publishable.

    ``message`` is one line, ``<what>: <field path>: <rule>``, about the first
    problem; ``problems`` lists every problem found, each as ``<field path>: <rule>``.
    """

    def __init__(self, message: str, *, hint: str = "", problems: Sequence[str] = ()) -> None:
        super().__init__(message, hint=hint)
        self.problems: tuple[str, ...] = tuple(problems)

    @classmethod
    def from_problems(cls, what: str, problems: Sequence[str], *, hint: str) -> ManifestError:
        """One error summarising ``problems`` (at least one) in a single line."""
        more = len(problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        return cls(f"{what}: {problems[0]}{suffix}", hint=hint, problems=problems)


def field_path(loc: Iterable[str | int]) -> str:
    """``("profileValues", "a.b.yaml")`` → ``profileValues["a.b.yaml"]``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            path += f".{part}" if path else part
        else:
            path += f"[{show(part)}]"
    return path


def _entries(count: int) -> str:
    return f"{count} entr{'y' if count == 1 else 'ies'}"


def _rule(error: ErrorDetails) -> str:
    kind = error["type"]
    value: Any = error.get("input")
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "missing":
        return "field required"
    if kind == "string_type":
        return f"must be a string, not {json_type(value)}"
    if kind in {"model_type", "dict_type", "model_attributes_type"}:
        return f"must be an object, not {json_type(value)}"
    if kind == "literal_error":
        expected = str(ctx["expected"])
        if len(expected) > 1 and expected[0] == expected[-1] == "'":
            expected = show(expected[1:-1])
        return f"must be {expected}, not {show(value)}"
    if kind in {"too_short", "too_long"}:
        actual = len(value) if isinstance(value, dict | list | str) else ctx.get("actual_length")
        if kind == "too_short":
            return f"must have at least {_entries(ctx['min_length'])}, not {actual}"
        return f"must have at most {_entries(ctx['max_length'])}, not {actual}"
    message = error["msg"]
    return message[:1].lower() + message[1:]


def describe(errors: Iterable[ErrorDetails]) -> list[str]:
    """Render pydantic errors as ``<field path>: <rule>`` lines, in document order."""
    problems: list[str] = []
    for error in errors:
        loc = list(error["loc"])
        ctx = error.get("ctx") or {}
        if error["type"] == "null_field":
            loc.append(str(ctx["key"]))
        rule = _rule(error)
        if loc and loc[-1] == "[key]":
            loc = loc[:-2]
            rule = f"key {rule}"
        path = field_path(loc)
        problems.append(f"{path}: {rule}" if path else rule)
    return problems
