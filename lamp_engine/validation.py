"""The few helpers every self-validating config dataclass uses: a field with help text, and checks that fail with
a ConfigError naming the field."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field, fields
from typing import Any

from lamp_engine.errors import ConfigError


def described(text: str, default: Any, choices: tuple[str, ...] | None = None,
              parse: Callable[[str], Any] | None = None, most: float | None = None) -> Any:
    """A dataclass field carrying its command-line and form help text, its choices where it has a few, how to
    read it from text where its type alone does not say (e.g. a number of steps or 'epoch'), and the most it may
    be (said in its help; `bounded` checks it), so one mistyped zero cannot tie a GPU up for months."""
    help_text = f"{text} (at most {most:,})" if most is not None else text
    return field(default=default, metadata={"help": help_text, "choices": choices, "parse": parse, "most": most})


def bounded(obj: Any) -> None:
    """Each numeric field of the dataclass that has an upper bound (`described(most=...)`) is within it."""
    for item in fields(obj):
        most, value = item.metadata.get("most"), getattr(obj, item.name)
        if most is not None and isinstance(value, int | float) and not isinstance(value, bool):
            require(value <= most, item.name, f"must be at most {most:,}, got {value:,} (a bound no real run needs)")


def require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


def positive(obj: Any, *names: str) -> None:
    """Each named field is set and > 0 (None is refused too: use `if value is not None` for optional fields)."""
    for name in names:
        value = getattr(obj, name)
        require(value is not None and value > 0, name, f"must be positive, got {value!r}")


def one_of(obj: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    require(value in choices, name, f"must be one of {', '.join(choices)}, got {value!r}")
