"""``Option``: one setting as the docs, ``digest init`` and the command's arguments see it,
a view of one field of ``Settings``; and ``reason``, what pydantic found wrong with a value,
said the way every message of digest says it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_origin

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from digest.settings.checks import Rule


@dataclass(frozen=True)
class Option:
    """One setting as the docs, ``digest init`` and the command's arguments see it: a view of
    one field of ``Settings``, where it is declared."""

    name: str
    kind: type
    default: Any
    help: str
    secret: bool = False
    check: Callable[[Any], str | None] | None = None
    # Bounds of a number: ``low`` and ``high`` inclusive, ``above`` exclusive.
    low: float | None = None
    high: float | None = None
    above: float | None = None

    def parse(self, text: str) -> Any:
        """``text`` (an argument) as this option's value; else a ValueError saying why."""
        from pydantic import TypeAdapter

        bounds = Field(ge=self.low, le=self.high, gt=self.above)
        form: Any = Annotated[self.kind, bounds]
        adapter: TypeAdapter[Any] = TypeAdapter(form)
        try:
            value = adapter.validate_python(text.strip())
        except ValidationError as exc:
            raise ValueError(reason(self, exc.errors()[0])) from None
        problem = self.check(value) if self.check is not None else None
        if problem:
            raise ValueError(problem)
        return value


def option_of(name: str, info: FieldInfo) -> Option:
    rule = next((item for item in info.metadata if isinstance(item, Rule)), Rule())
    bounds = {type(item).__name__: item for item in info.metadata}
    kind = get_origin(info.annotation) or info.annotation
    assert isinstance(kind, type)
    return Option(
        name,
        str if kind is Path else kind,
        info.default,
        info.description or "",
        secret=rule.secret,
        check=rule.check,
        low=getattr(bounds.get("Ge"), "ge", None),
        high=getattr(bounds.get("Le"), "le", None),
        above=getattr(bounds.get("Gt"), "gt", None),
    )


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


_LIST = 'must be a list of strings, as in ["a", "b"]'
_REASONS = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "path_type": "must be a string",
    "list_type": _LIST,
}


def reason(option: Option, error: ErrorDetails) -> str:
    """What pydantic found wrong with a value, said the way every message of digest says it
    (never holding the value, which may be a secret)."""
    kind = error["type"]
    if kind == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if len(error["loc"]) > 1:  # an item of a list
        return _LIST
    if kind in {"greater_than_equal", "less_than_equal"}:
        low, high = option.low, option.high
        if low is not None and high is not None:
            return f"must be from {number(low)} to {number(high)}"
        return (
            f"must be at least {number(low)}"
            if low is not None
            else f"must be at most {number(high or 0)}"
        )
    if kind == "greater_than":
        return f"must be greater than {number(option.above or 0)}"
    return _REASONS.get(kind, error["msg"])


def shown_value(option: Option, value: Any) -> str:
    if option.secret:
        return ""
    text = repr(value)
    return f" ({text if len(text) <= 40 else text[:39] + '…'})"
