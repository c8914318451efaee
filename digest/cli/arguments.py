"""Argument types: a value checked the way the settings table or a subscriber's field
declaration checks it, read only when a value is checked or help is shown, so that
building the parser loads nothing of the store, the settings or the service.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from digest.errors import UsageError

if TYPE_CHECKING:
    from digest.settings.options import Option


def _option(name: str) -> Option:
    """How an argument is checked: as a setting, or a search's or listing's limit."""
    from digest.settings.model import OPTIONS
    from digest.settings.options import Option

    if name == "limit":
        return Option("limit", int, 20, "Most papers a search shows.", low=1, high=1000)
    if name == "listings_limit":
        return Option("limit", int, 50, "Most listings shown.", low=1, high=100_000)
    return next(option for option in OPTIONS if option.name == name)


def given(value: Any, name: str) -> Any:
    """The argument, or its default from the table (read only now: the parser loads none)."""
    return _option(name).default if value is None else value


def bounded(name: str) -> Callable[[str], Any]:
    """An argument type that checks a value the way the settings table does."""

    def parse(text: str) -> Any:
        try:
            return _option(name).parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}, not {text!r}") from None

    return parse


class Choices(Sequence[str]):
    """Choices kept by a lower module, read when a value is checked or help is shown, so
    that building the parser loads nothing of the store."""

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    def _values(self) -> tuple[str, ...]:
        return tuple(getattr(importlib.import_module(self.module), self.name))

    def __getitem__(self, index: Any) -> Any:
        return self._values()[index]

    def __len__(self) -> int:
        return len(self._values())

    def __contains__(self, value: object) -> bool:
        return value in self._values()


def subscriber_field(name: str) -> Callable[[str], Any]:
    """An argument type that checks a value by the declaration of a subscriber's field."""

    def parse(text: str) -> Any:
        from digest.service.subscriptions import check_field

        try:
            return check_field(name, text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(
                f"{str(exc).partition(') ')[2]}, not {text!r}"
            ) from None

    return parse


def positive(text: str) -> float:
    """A number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return value
