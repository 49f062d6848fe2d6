"""Typed reading of one TOML table, for the collector's settings files (reading plans and
meter profiles): each value checked for its type and range, every key accounted for, and
each error naming the file and the dotted key, so a utility's engineer finds the line."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

_KINDS: dict[type, str] = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "a boolean",
    dict: "a table",
    list: "an array",
}


def kind_name(kind: type | tuple[type, ...]) -> str:
    """``an integer or a number``: what a key takes, as an error says it."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_KINDS.get(k, f"a {k.__name__}") for k in kinds)


def kind_of(value: Any) -> str:
    """What a TOML value is, as an error says it (a boolean is no integer here)."""
    if isinstance(value, bool):
        return "a boolean"
    return _KINDS.get(type(value), f"a {type(value).__name__}")


class TomlTable:
    """One table of a settings file; ``error`` makes the exception its messages raise."""

    def __init__(
        self,
        source: str,
        table: dict[str, Any],
        prefix: str,
        error: Callable[[str], Exception],
    ) -> None:
        self.source = source
        self.table = table
        self.prefix = prefix
        self.error = error
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, reason: str) -> Exception:
        return self.error(f"{self.source}: {self.key(name)}: {reason}")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        """The value of ``name`` if it is of ``kind`` (a boolean only where one is asked)."""
        self.used.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
            raise self.fail(name, f"expected {kind_name(kind)}, got {kind_of(value)}")
        return value

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.optional_integer(name, lo, hi)
        return default if value is None else value

    def optional_integer(self, name: str, lo: int, hi: int) -> int | None:
        value: int | None = self.get(name, int, None)
        if value is not None and not lo <= value <= hi:
            raise self.fail(name, f"{value} outside {lo}..{hi}")
        return value

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        value = float(self.get(name, (int, float), default))
        if not lo <= value <= hi:
            raise self.fail(name, f"{value:g} outside {lo:g}..{hi:g}")
        return value

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        value: str = self.get(name, str, default)
        if value not in choices:
            raise self.fail(name, f"{value!r}: use one of {', '.join(choices)}")
        return value

    def sub(self, name: str, required: bool = False) -> TomlTable:
        """The table ``name`` (empty when absent, unless ``required``)."""
        table = self.get(name, dict, None)
        if table is None:
            if required:
                raise self.fail(name, "missing table")
            table = {}
        return TomlTable(self.source, table, self.key(name), self.error)

    def done(self) -> None:
        """Every key was read: an unknown one (a typo) is an error naming the known ones."""
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], f"unknown key (known: {', '.join(sorted(self.used))})")
