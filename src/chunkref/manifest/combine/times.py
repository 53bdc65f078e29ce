"""CF time units: parse ``"<unit> since <epoch>"``, compare calendars, rebase values exactly.

Files of a series often count time from their own start (``days since 2000-01-01`` in January,
``days since 2000-02-01`` in February).  Concatenating their raw values would be wrong; decoding
them to datetimes would need cftime and lose the encoding.  Instead the values are *rebased* to
the first file's units with integer arithmetic: ``new = old * scale + delta`` where ``scale`` (the
ratio of the two units) and ``delta`` (the epoch difference in the target unit) must be integers,
and the result must be exactly representable in the variable's dtype.  Anything else is refused:
a combine never rounds a time value.

Calendars are compared by meaning (``noleap`` == ``365_day``, ``all_leap`` == ``366_day``,
``standard`` == ``gregorian`` == no attribute); epoch differences are computed in the calendar of
the files (the ``standard`` calendar switches from Julian to Gregorian on 1582-10-15).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = ["TimeUnits", "RebaseError", "canonical_calendar", "parse_time_units", "rebase_values"]


class RebaseError(ValueError):
    """Time values cannot be rebased exactly (the caller wraps it into a CombineError)."""


_US = {
    "microseconds": 1,
    "microsecond": 1,
    "us": 1,
    "usec": 1,
    "usecs": 1,
    "milliseconds": 1_000,
    "millisecond": 1_000,
    "ms": 1_000,
    "msec": 1_000,
    "msecs": 1_000,
    "seconds": 1_000_000,
    "second": 1_000_000,
    "sec": 1_000_000,
    "secs": 1_000_000,
    "s": 1_000_000,
    "minutes": 60_000_000,
    "minute": 60_000_000,
    "min": 60_000_000,
    "mins": 60_000_000,
    "hours": 3_600_000_000,
    "hour": 3_600_000_000,
    "hr": 3_600_000_000,
    "hrs": 3_600_000_000,
    "h": 3_600_000_000,
    "days": 86_400_000_000,
    "day": 86_400_000_000,
    "d": 86_400_000_000,
    "weeks": 604_800_000_000,
    "week": 604_800_000_000,
}

_CALENDARS = {
    "": "standard",
    "standard": "standard",
    "gregorian": "standard",
    "proleptic_gregorian": "proleptic_gregorian",
    "julian": "julian",
    "noleap": "365_day",
    "365_day": "365_day",
    "all_leap": "366_day",
    "366_day": "366_day",
    "360_day": "360_day",
    "none": "none",
}

_UNITS_RE = re.compile(r"^\s*([A-Za-z]+)\s+since\s+(.+?)\s*$")
_EPOCH_RE = re.compile(
    r"^(?P<y>[+-]?\d{1,6})-(?P<m>\d{1,2})-(?P<d>\d{1,2})"
    r"(?:[ T]+(?P<H>\d{1,2})(?::(?P<M>\d{1,2})(?::(?P<S>\d{1,2})(?:\.(?P<f>\d{1,6})\d*)?)?)?)?"
    r"\s*(?P<tz>Z|UTC|GMT|[+-]\d{1,2}(?::?\d{2})?)?\s*$",
    re.IGNORECASE,
)
_CUM_NOLEAP = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)
_CUM_LEAP = (0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335)


def canonical_calendar(name: object) -> str:
    """The canonical name of a CF calendar (``noleap`` -> ``365_day``...); unknown names pass
    through lower-cased (they only compare equal to themselves)."""
    key = "" if name is None else str(name).strip().lower()
    return _CALENDARS.get(key, key)


@dataclass(frozen=True)
class TimeUnits:
    """Parsed CF time units: the unit in microseconds and the epoch in the calendar."""

    text: str
    unit: str
    unit_us: int | None  # None for month/year units (not rebaseable)
    calendar: str
    epoch_day: int  # day number of the epoch date in the calendar
    epoch_us: int  # time of day of the epoch (minus the time zone offset), microseconds

    def offset_us(self, other: TimeUnits) -> int:
        """Microseconds from ``other``'s epoch to this one's."""
        return (self.epoch_day - other.epoch_day) * 86_400_000_000 + (self.epoch_us - other.epoch_us)


def parse_time_units(units: object, calendar: object = None) -> TimeUnits | None:
    """Parse ``"<unit> since <epoch>"``; None when ``units`` is not a CF time unit.

    Raises
    ------
    RebaseError
        When it looks like time units but the epoch or calendar cannot be interpreted.
    """
    if not isinstance(units, str):
        return None
    m = _UNITS_RE.match(units)
    if m is None:
        return None
    unit = m.group(1).lower()
    unit_us = _US.get(unit)
    if unit_us is None and unit not in ("months", "month", "years", "year", "common_years", "common_year"):
        return None
    cal = canonical_calendar(calendar)
    e = _EPOCH_RE.match(m.group(2))
    if e is None:
        raise RebaseError(f"cannot parse the epoch {m.group(2)!r} of time units {units!r}")
    y, mo, d = int(e.group("y")), int(e.group("m")), int(e.group("d"))
    hh, mm, ss = int(e.group("H") or 0), int(e.group("M") or 0), int(e.group("S") or 0)
    frac = e.group("f") or ""
    us = int(frac.ljust(6, "0")) if frac else 0
    tz = (e.group("tz") or "").upper()
    tz_us = 0
    if tz and tz not in ("Z", "UTC", "GMT"):
        sign = -1 if tz[0] == "-" else 1
        body = tz[1:].replace(":", "")
        th, tm = (int(body[:-2]), int(body[-2:])) if len(body) > 2 else (int(body), 0)
        tz_us = sign * (th * 3600 + tm * 60) * 1_000_000
    day = day_number(y, mo, d, cal)
    tod = ((hh * 60 + mm) * 60 + ss) * 1_000_000 + us - tz_us
    return TimeUnits(units, unit, unit_us, cal, day, tod)


def day_number(y: int, m: int, d: int, calendar: str) -> int:
    """A day count of the date in ``calendar`` (differences between dates are exact)."""
    if not (1 <= m <= 12 and 1 <= d <= 31):
        raise RebaseError(f"invalid date {y}-{m}-{d}")
    if calendar == "360_day":
        if d > 30:
            raise RebaseError(f"invalid 360_day date {y}-{m}-{d}")
        return y * 360 + (m - 1) * 30 + d - 1
    if calendar == "365_day":
        return y * 365 + _CUM_NOLEAP[m - 1] + d - 1
    if calendar == "366_day":
        return y * 366 + _CUM_LEAP[m - 1] + d - 1
    if calendar == "proleptic_gregorian":
        return _jdn_gregorian(y, m, d)
    if calendar == "julian":
        return _jdn_julian(y, m, d)
    if calendar == "standard":
        if (y, m, d) >= (1582, 10, 15):
            return _jdn_gregorian(y, m, d)
        if (y, m, d) > (1582, 10, 4):
            raise RebaseError(f"{y}-{m:02d}-{d:02d} does not exist in the standard calendar")
        return _jdn_julian(y, m, d)
    raise RebaseError(f"calendar {calendar!r} is not supported for rebasing time values")


def _jdn_gregorian(y: int, m: int, d: int) -> int:
    a = (14 - m) // 12
    yy = y + 4800 - a
    mm = m + 12 * a - 3
    return d + (153 * mm + 2) // 5 + 365 * yy + yy // 4 - yy // 100 + yy // 400 - 32045


def _jdn_julian(y: int, m: int, d: int) -> int:
    a = (14 - m) // 12
    yy = y + 4800 - a
    mm = m + 12 * a - 3
    return d + (153 * mm + 2) // 5 + 365 * yy + yy // 4 - 32083


def rebase_parameters(source: TimeUnits, target: TimeUnits) -> tuple[int, int]:
    """``(scale, delta)`` with ``value_in_target = value_in_source * scale + delta``.

    Raises
    ------
    RebaseError
        Different calendars, month/year units that differ, or a non-integer scale or delta.
    """
    if source.calendar != target.calendar:
        raise RebaseError(f"calendar {source.calendar!r} differs from {target.calendar!r}")
    if source.unit_us is None or target.unit_us is None:
        if source.text.strip() == target.text.strip():
            return 1, 0
        raise RebaseError(
            f"time units {source.text!r} and {target.text!r}: month/year units cannot be rebased exactly"
        )
    if source.unit_us % target.unit_us:
        raise RebaseError(
            f"time units {source.text!r} cannot be expressed exactly in {target.text!r} "
            f"(one {source.unit} is not a whole number of {target.unit})"
        )
    offset = source.offset_us(target)
    if offset % target.unit_us:
        raise RebaseError(
            f"the epoch of {source.text!r} is not a whole number of {target.unit} after the epoch of {target.text!r}"
        )
    return source.unit_us // target.unit_us, offset // target.unit_us


def rebase_values(values: np.ndarray, scale: int, delta: int, skip: np.ndarray | None = None) -> np.ndarray:
    """``values * scale + delta``, exactly, in the dtype of ``values``.

    ``skip`` marks elements left unchanged (fill values, NaN).

    Raises
    ------
    RebaseError
        When some result is not exactly representable in the dtype.
    """
    values = np.asarray(values)
    if scale == 1 and delta == 0:
        return values
    keep = np.zeros(values.shape, bool) if skip is None else np.asarray(skip, bool)
    if values.dtype.kind in "iu":
        info = np.iinfo(values.dtype)
        big = values.astype(object) * scale + delta  # exact Python integers
        work = np.where(keep, values.astype(object), big)
        lo, hi = (min(work.flat), max(work.flat)) if work.size else (0, 0)
        if lo < info.min or hi > info.max:
            raise RebaseError(f"rebased time values overflow {values.dtype}")
        return work.astype(values.dtype)
    if values.dtype.kind == "f":
        dt = values.dtype
        x = values.astype(dt)
        s = dt.type(scale)
        d = dt.type(delta)
        if int(s) != scale or int(d) != delta:
            raise RebaseError(f"scale {scale} / offset {delta} are not exactly representable in {dt}")
        with np.errstate(over="ignore", invalid="ignore"):
            prod = x * s
            perr = _two_product_error(x, s)
            out = prod + d
            serr = _two_sum_error(prod, d, out)
        bad = ~keep & np.isfinite(x) & ((perr != 0) | (serr != 0) | ~np.isfinite(out))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise RebaseError(
                f"time value {x.flat[i]!r} * {scale} + {delta} is not exactly representable in {dt}"
            )
        return np.where(keep, x, out).astype(dt)
    raise RebaseError(f"time values of dtype {values.dtype} cannot be rebased")


def _two_sum_error(a: np.ndarray, b: np.floating, s: np.ndarray) -> np.ndarray:
    """Knuth's TwoSum: the rounding error of ``s = a + b`` (0 when exact)."""
    bb = s - a
    return (a - (s - bb)) + (b - bb)


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bits = np.finfo(a.dtype).nmant + 1
    c = a.dtype.type(2 ** ((bits + 1) // 2) + 1) * a
    hi = c - (c - a)
    return hi, a - hi


def _two_product_error(a: np.ndarray, b: np.floating) -> np.ndarray:
    """Dekker's TwoProduct: the rounding error of ``a * b`` (0 when exact)."""
    p = a * b
    ah, al = _split(np.asarray(a))
    bh, bl = _split(np.asarray(b, dtype=np.asarray(a).dtype))
    return ((ah * bh - p) + ah * bl + al * bh) + al * bl
