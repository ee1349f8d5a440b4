"""Notices: a line that is not an error (a fallback taken, a cache rebuilt, a retry), and where it goes.

Every stage takes a ``Notify`` and passes its notices on; a job routes them into its event channel, the
CLI onto its display. ``say_on_stderr`` is where they go when nobody routes them (a library call, a
backend made outside a job and the CLI). A leaf: every layer may import it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

Notify = Callable[[str], None]


def say_on_stderr(message: str) -> None:
    """Where a notice goes when nobody routes it."""
    print(f"srgan-deploy: {message}", file=sys.stderr)
