"""argparse types for the electra commands: every number is checked when parsed, so a bad value is an
``argument --flag: ...`` error (exit status 2) before any work, never a NaN model after it."""
from __future__ import annotations

import argparse
import math


def integer(low: int, high: int | None = None):
    """An int in ``[low, high]`` (``high`` None: no upper bound)."""
    wanted = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def number(low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False):
    """A finite float in the interval from ``low`` to ``high`` (open ends where asked); NaN and inf are refused."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    wanted = (f"a finite number {'>' if low_open else '>='} {low}" if high is None
              else f"a finite number in {left}{low}, {high}{right}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (low_open and value == low) or (
                high is not None and (value > high or (high_open and value == high))):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse
