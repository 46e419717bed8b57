"""``ray_import`` -- ``recbole.quick_start`` imports ``ray.tune``; ray 2.6.3 imports
``pkg_resources``, which setuptools 81 removed, and reads ``np.bool8`` (removed in numpy 2) while defining
a class; ``np.bool8`` is set for the duration of that one import and removed again. Rather than pin an
old setuptools into the user's environment, when (and only when) ``pkg_resources`` cannot be imported we register a minimal module that
provides exactly what ray 2.6.3 uses (``get_distribution``, ``require``, ``DistributionNotFound``,
``packaging`` and ``_vendor.packaging.version``). Any other attribute raises an ``AttributeError`` that
says it is this shim.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import types
from dataclasses import dataclass
from typing import Any

#: what :func:`install` replaced (RecBole's own functions)
ORIGINALS: dict[str, Any] = {}



class _ShimModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"pkg_resources.{name}: this is recgoat_recbole's minimal pkg_resources shim (setuptools >= 81 "
            "removed the real one); it only provides what ray 2.6.3 needs. "
            "Install 'setuptools<81' for the full module."
        )


def _build_pkg_resources_shim() -> types.ModuleType:
    import packaging
    import packaging.version

    shim = _ShimModule("pkg_resources", "recgoat_recbole compatibility shim for ray 2.6.3")

    class DistributionNotFound(Exception):
        pass

    @dataclass
    class _Distribution:
        project_name: str
        version: str

    def get_distribution(name: str) -> _Distribution:
        try:
            return _Distribution(name, importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError as exc:
            raise DistributionNotFound(name) from exc

    def require(name: str) -> list[_Distribution]:
        return [get_distribution(name)]

    shim.DistributionNotFound = DistributionNotFound
    shim.get_distribution = get_distribution
    shim.require = require
    shim.packaging = packaging
    vendor = types.ModuleType("pkg_resources._vendor")
    vendor.packaging = packaging
    shim._vendor = vendor
    shim.__path__ = []  # a package, so 'pkg_resources._vendor...' imports resolve through sys.modules
    return shim


def install() -> None:
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import packaging.version

        shim = _build_pkg_resources_shim()
        sys.modules["pkg_resources"] = shim
        sys.modules["pkg_resources._vendor"] = shim._vendor
        sys.modules["pkg_resources._vendor.packaging"] = sys.modules["packaging"]
        sys.modules["pkg_resources._vendor.packaging.version"] = packaging.version
        ORIGINALS["pkg_resources"] = None
    import numpy as np

    # ray 2.6.3's tune logger reads np.bool8 (removed in numpy 2) at class-definition time: provide it for
    # the duration of the import only.
    added = "bool8" not in np.__dict__
    if added:
        np.bool8 = np.bool_
    try:
        import recbole.quick_start  # noqa: F401  (imports ray.tune)
    finally:
        if added:
            del np.bool8
