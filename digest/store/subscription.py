"""A subscriber, one type for every door: the store, the web form, the CLI, CSV, JSON and
the settings file's ``[[subscribers]]`` tables; and one type for a change to one.

``Subscription`` declares each field once: its type, its default, its bounds and the
line of help the docs and ``digest subscribe --help`` show. ``SubscriptionPatch`` is a
change: only the fields it was given, each checked by the same declaration, and only
those are written (``digest subscribe`` gives all of its options; the manage page gives
what the form holds). Both write paths of the store apply a patch through one function.

What needs more than the field itself stays at the service's door: an address is
normalized there, and each interest parsed by the interest language.
"""

from __future__ import annotations

import json
import math
import zoneinfo
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

Status = Literal["pending", "active", "paused", "unsubscribed", "bounced"]
Frequency = Literal["daily", "weekly"]
STATUSES: tuple[str, ...] = get_args(Status)
FREQUENCIES: tuple[str, ...] = get_args(Frequency)


def _number(value: Any) -> Any:
    # true is no count of papers, and a score is no toggle (pydantic would take it as 1)
    if isinstance(value, bool):
        raise ValueError("must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    if isinstance(value, str):
        value = value.strip().replace("_", "")
        try:
            if not math.isfinite(float(value)):
                raise ValueError("must be a finite number")
        except ValueError as exc:
            if "finite" in str(exc):
                raise
    return value


def _zone(value: Any) -> Any:
    if value in (None, ""):
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError("is not a known time zone (try UTC or Europe/Berlin)") from None
    return value


def _hour(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None  # no hour of their own: the site's schedule
    return _number(value)


def _interests(value: Any) -> Any:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError('must be a list of strings, as in ["a", "b"]')
    return tuple(value)


Number = BeforeValidator(_number)


class Stored(Protocol):
    """A stored row (``digest.store.models.Subscriber``, which takes its defaults from here):
    every field below, interests as JSON text."""

    id: int | None
    interests: str


def stored_interests(text: str) -> tuple[str, ...]:
    """The interests a stored row holds (JSON text), as a ``Subscription`` has them."""
    return tuple(json.loads(text))


class Subscription(BaseModel):
    """A subscriber as every part of digest reads one: address, status and choices.

    The defaults and bounds below are the only ones: the CLI's options, the web form, a
    CSV import and the settings file are all checked against them (``check_field``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int = 0
    email: str = Field("", description="The subscriber's address.")
    status: Status = "active"
    interests: Annotated[tuple[str, ...], BeforeValidator(_interests)] = Field(
        (), description="Interest expressions, one string each."
    )
    max_items: Annotated[int, Number] = Field(
        20, ge=1, le=1000, description="Most papers per digest."
    )
    min_score: Annotated[float, Number] = Field(
        0.0, ge=0, le=10_000, description="Least score a paper needs."
    )
    frequency: Frequency = Field("daily", description="daily or weekly.")
    send_empty: bool = Field(False, description='Send a "nothing new" mail instead of none.')
    timezone: Annotated[str | None, BeforeValidator(_zone)] = Field(
        None, description="The zone they read dates in; none: the site's."
    )
    digest_hour: Annotated[int | None, BeforeValidator(_hour)] = Field(
        None,
        ge=0,
        le=23,
        description="Hour of the day (0 to 23, in their time zone) they want their digest;"
        " none: the site's schedule.",
    )
    created_at: datetime | None = None
    last_digest_at: datetime | None = None

    @classmethod
    def of(cls, row: Stored) -> Subscription:
        """The subscription a stored row holds (the one place a row is read into one)."""
        values = {name: getattr(row, name) for name in cls.model_fields if name != "interests"}
        values["id"] = int(row.id or 0)
        values["interests"] = stored_interests(row.interests)
        # the store holds only values that passed these checks on their way in
        return cls.model_construct(**values)

    def choices(self) -> dict[str, Any]:
        """Address, status and every choice, as JSON-ready data (exports, listings)."""
        return self.model_dump(mode="json", include=set(CHOICES))


# What a subscriber may change of themselves (the rest is the store's: id and times).
CHOICES = (
    "email",
    "status",
    "interests",
    "max_items",
    "min_score",
    "frequency",
    "send_empty",
    "timezone",
    "digest_hour",
)


def default(name: str) -> Any:
    """The default of a subscriber's field, as the one declaration gives it."""
    return Subscription.model_fields[name].default


def _bounds(name: str) -> tuple[float | None, float | None]:
    low = high = None
    for item in Subscription.model_fields[name].metadata:
        low = getattr(item, "ge", low)
        high = getattr(item, "le", high)
    return low, high


def _shown(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _reason(name: str, problem: Mapping[str, Any]) -> str:
    """One error of pydantic's, in the words digest has always used."""
    kind = str(problem["type"])
    if kind in {"greater_than_equal", "less_than_equal"}:
        low, high = _bounds(name)
        return f"must be from {_shown(low or 0)} to {_shown(high or 0)}"
    if kind in {"int_parsing", "int_from_float", "int_type"}:
        return "must be a whole number"
    if kind in {"float_parsing", "float_type"}:
        return "must be a number"
    if kind == "finite_number":
        return "must be a finite number"
    if kind == "literal_error":
        choices = [str(choice) for choice in get_args(Subscription.model_fields[name].annotation)]
        return f"must be {', '.join(choices[:-1])} or {choices[-1]}"
    if kind == "bool_parsing" or kind == "bool_type":
        return "must be true or false"
    if kind == "value_error":
        return str(problem.get("ctx", {}).get("error", problem["msg"]))
    if kind == "extra_forbidden":
        return "is not a subscriber's setting"
    return str(problem["msg"])


class FieldError(ValueError):
    """A subscriber's field that does not fit its declaration; ``name`` says which."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name
        self.reason = reason


class SubscriptionPatch(Mapping[str, Any]):
    """A change to a subscriber: the fields given, each checked against ``Subscription``.

    A mapping of exactly those fields (what is not given is not changed), so it compares
    with, and is stored as, plain data (a request awaiting confirmation is one in JSON).
    """

    __slots__ = ("_given",)

    def __init__(self, **given: Any) -> None:
        unknown = [name for name in given if name not in CHOICES]
        if unknown:
            raise FieldError(unknown[0], "is not a subscriber's setting")
        try:
            checked = Subscription.model_validate(given)
        except ValidationError as exc:
            problem = exc.errors()[0]
            name = str(problem["loc"][0])
            raise FieldError(name, _reason(name, problem)) from None
        # interests as a list, like the JSON and TOML they come from and go to
        values = {name: getattr(checked, name) for name in given}
        if "interests" in values:
            values["interests"] = list(values["interests"])
        self._given = values

    def __getitem__(self, name: str) -> Any:
        return self._given[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._given)

    def __len__(self) -> int:
        return len(self._given)

    def __getattr__(self, name: str) -> Any:
        # a given field reads as an attribute too (patch.interests); one not given does not
        if name.startswith("_") or name not in self._given:
            raise AttributeError(name)
        return self._given[name]

    def __repr__(self) -> str:
        return f"SubscriptionPatch({self._given!r})"

    @property
    def email(self) -> str:
        """The address this change is for ('' when it names none)."""
        return str(self._given.get("email", ""))

    def but(self, **changed: Any) -> SubscriptionPatch:
        """The same change with some fields given anew (and checked again)."""
        return SubscriptionPatch(**{**self._given, **changed})

    def as_json(self) -> dict[str, Any]:
        """The change as JSON-ready data."""
        return {name: list(value) if name == "interests" else value for name, value in self.items()}


def check_field(name: str, value: Any) -> Any:
    """One field's value (typed, or text from a form, an argument or a CSV cell) as its
    declaration takes it, or a FieldError saying what is wrong."""
    return SubscriptionPatch(**{name: value})[name]


def apply(row: Stored, patch: SubscriptionPatch) -> None:
    """Write a change onto a stored row: the one way either write path changes one."""
    for name, value in patch.items():
        setattr(row, name, json.dumps(list(value)) if name == "interests" else value)
