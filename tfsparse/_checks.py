"""Argument checks shared by the public API.

Every check raises a ``ValueError`` (or ``TypeError``) whose message names the
parameter and the values it accepts, so that a bad setting fails where it is
written rather than as a NaN many steps later.
"""

import math
import numbers


def number(name, value, *, low=None, high=None, low_open=False, high_open=False, integer=False):
    """Returns `value` if it is a real number inside the given interval."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(
        value, numbers.Integral if integer else numbers.Real
    ):
        raise TypeError(f"`{name}` must be {kind}, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value!r}.")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"`{name}` must be in {left}{lo}, {hi}{right}, got {value!r}.")
    return value


def choice(name, value, accepted):
    """Returns `value` if it is one of `accepted`."""
    if value not in accepted:
        listed = ", ".join(repr(a) for a in accepted)
        raise ValueError(f"`{name}` must be one of {listed}; got {value!r}.")
    return value
