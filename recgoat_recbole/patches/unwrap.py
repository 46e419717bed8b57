"""What a patched function was before our wrappers: RecBole's own (for tests, and for a patch that wraps a
function another patch has wrapped already)."""

from __future__ import annotations

from typing import Any

__all__ = ["recbole_original"]


def recbole_original(fn: Any) -> Any:
    """``fn`` without the wrappers our patches put around it (marked ``__recgoat_compat__``): RecBole's own."""
    while getattr(fn, "__recgoat_compat__", False):
        fn = fn.__wrapped__
    return fn
