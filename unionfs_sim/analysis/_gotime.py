"""Timestamps as Docker's Go code prints them (``time.Time.Format(RFC3339Nano)``, ``Unix()``).

Image configs store ``created`` as RFC 3339 text with up to nine fractional digits;
Docker parses it into a ``time.Time`` and prints it again, so the text can change
(trailing zeros dropped, ``+00:00`` becomes ``Z``). Python's datetime keeps only
microseconds, so the nanoseconds are carried by hand.
"""

from __future__ import annotations

import datetime as _dt
import re

import attrs

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z")

GO_ZERO = "0001-01-01T00:00:00Z"
"""``time.Time{}`` printed with RFC3339Nano: what Docker shows for a missing time."""
GO_ZERO_UNIX = -62135596800
"""``time.Time{}.Unix()``."""


@attrs.frozen
class GoTime:
    """A parsed RFC 3339 time: local wall clock, nanoseconds and UTC offset in seconds."""

    wall: _dt.datetime
    nanos: int
    offset: int

    def rfc3339nano(self) -> str:
        """As Go's ``Format(time.RFC3339Nano)``: fraction without trailing zeros, ``Z`` for UTC."""
        s = self.wall.strftime("%Y-%m-%dT%H:%M:%S")
        if self.nanos:
            s += "." + f"{self.nanos:09d}".rstrip("0")
        if self.offset == 0:
            return s + "Z"
        sign = "+" if self.offset > 0 else "-"
        h, m = divmod(abs(self.offset) // 60, 60)
        return f"{s}{sign}{h:02d}:{m:02d}"

    def unix(self) -> int:
        """Seconds since the epoch, as Go's ``Unix()`` (floor for earlier times)."""
        epoch = _dt.datetime(1970, 1, 1)
        delta = self.wall - epoch
        return delta.days * 86400 + delta.seconds - self.offset


def parse(text: str | None) -> GoTime | None:
    """``text`` as Go's ``time.Time`` JSON decoding reads it; None for a missing/empty time.

    Raises:
        ValueError: text that is not RFC 3339 (Docker refuses such a config too).
    """
    if not text:
        return None
    m = _RFC3339.match(text)
    if m is None:
        raise ValueError(f"created {text!r} is not an RFC 3339 time")
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7) or ""
    nanos = int(frac.ljust(9, "0")) if frac else 0
    offset = 0
    if not m.group(8) and m.group(9) is not None:
        offset = (1 if m.group(9) == "+" else -1) * (int(m.group(10)) * 3600 + int(m.group(11)) * 60)
    return GoTime(_dt.datetime(y, mo, d, h, mi, s), nanos, offset)


def rfc3339nano(text: str | None) -> str:
    """``text`` reprinted as Docker prints a created time (``GO_ZERO`` when missing)."""
    t = parse(text)
    return t.rfc3339nano() if t is not None else GO_ZERO


def unix(text: str | None) -> int:
    """Seconds since the epoch of ``text``, as ``docker history``'s API reports ``Created``."""
    t = parse(text)
    return t.unix() if t is not None else GO_ZERO_UNIX
