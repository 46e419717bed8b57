"""The error a command raises for a mistake in what the user asked for (standard library only)."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """An error in what the user asked for; printed as one line, ``recgoat: error: ...``, exit status 2."""
