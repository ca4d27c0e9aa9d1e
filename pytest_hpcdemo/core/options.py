"""Checked command-line numbers: a bad value is a usage error (exit 4) that says what was expected."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

AddOption = Callable[..., Any]  # pytest's OptionGroup.addoption or argparse's add_argument


def number(expected: str, valid: Callable[[float], bool], bounds: str,
           parse: Callable[[str], float] = float) -> Callable[[str], float]:
    """An argparse ``type``: ``parse`` the text, then require ``valid``; the errors name both."""

    def convert(text: str) -> float:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text!r}")
        return value

    return convert


def percent_or_fraction(text: str) -> float:
    """"5%" or "0.05"."""
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


positive_seconds = number("seconds", lambda v: v > 0, "more than 0 seconds")
