"""Progress hooks: how the long operations (loading, saving, scanning, flattening) report.

A hook is called as ``progress(done, total, what)``: ``done`` and ``total`` in the unit the
operation counts (bytes of layer blobs for loads and saves), ``total`` 0 when unknown,
``what`` a short label of the step about to run. It is called before each step and once
with ``done == total`` at the end; the CLI draws a bar from it, a notebook can too.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int, str], None]
"""A progress hook: ``(done, total, what)``; ``total`` 0 when unknown."""
