"""Frozen sparse graphs kept on a RecBole model, shared by RecGOAT and the peers (FREEDOM, LGMRec).

A sparse tensor attribute does not follow ``.to(device)`` and does not survive ``deepcopy`` (RecBole's
``get_flops`` copies the model). So a graph is stored as the three dense CSR parts, registered as non-persistent
buffers ``<prefix>_crow``, ``<prefix>_col`` and ``<prefix>_val`` (checkpoints do not carry them: they are rebuilt
from the training split), and read back as a CSR view without a copy.
"""

from __future__ import annotations

from typing import Any

import torch

from recgoat_core.layers import symmetric_spmm

__all__ = ["csr_parts", "GraphBuffers", "SymmetricGraph"]


def csr_parts(adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(crow, col, values)`` of a sparse COO or CSR matrix."""
    csr = adjacency if adjacency.layout == torch.sparse_csr else adjacency.coalesce().to_sparse_csr()
    return csr.crow_indices(), csr.col_indices(), csr.values()


class GraphBuffers:
    """Mixin for an ``nn.Module``: :meth:`_register_csr` stores a graph, :meth:`_csr` reads it back."""

    def _register_csr(self, prefix: str, adjacency: torch.Tensor) -> None:
        crow, col, val = csr_parts(adjacency)
        self.register_buffer(f"{prefix}_crow", crow, persistent=False)
        self.register_buffer(f"{prefix}_col", col, persistent=False)
        self.register_buffer(f"{prefix}_val", val, persistent=False)

    def _csr(self, prefix: str, shape: tuple[int, int]) -> torch.Tensor:
        """A CSR view (no copy) on the buffers :meth:`_register_csr` stored."""
        return torch.sparse_csr_tensor(getattr(self, f"{prefix}_crow"), getattr(self, f"{prefix}_col"),
                                       getattr(self, f"{prefix}_val"), shape, check_invariants=False)

    @staticmethod
    def _build_device(config) -> torch.device:
        """Where graphs are built (kNN search): the run's device, else the CPU."""
        return torch.device(config["device"]) if config["device"] is not None else torch.device("cpu")


class SymmetricGraph:
    """A symmetric sparse graph handed to a RecBole backbone as its graph attribute (RecGOAT's user–item graph
    as LightGCN's ``norm_adj_matrix``, NCL's ``norm_adj_mat``): the backbone's own ``torch.sparse.mm(graph, x)``
    (or ``mm`` / ``matmul`` / ``@``) goes through :func:`recgoat_core.layers.symmetric_spmm`, whose backward
    multiplies by the graph again instead of by its transpose (a CSR transpose sorts every edge, once per layer
    and step); the product is the same, the gradient the same up to float rounding. Anything else (``layout``,
    ``to_dense()``, other torch functions) sees the tensor itself."""

    __slots__ = ("tensor",)
    _PRODUCTS = frozenset({torch.sparse.mm, torch.mm, torch.matmul, torch.Tensor.mm, torch.Tensor.matmul,
                           torch.Tensor.__matmul__})

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None) -> Any:
        kwargs = {k: v for k, v in (kwargs or {}).items() if not (k == "reduce" and v is None)}
        if (func in cls._PRODUCTS and len(args) == 2 and not kwargs and isinstance(args[0], cls)
                and isinstance(args[1], torch.Tensor) and args[1].layout == torch.strided):
            return symmetric_spmm(args[0].tensor, args[1])
        plain = [a.tensor if isinstance(a, cls) else a for a in args]
        return func(*plain, **{k: v.tensor if isinstance(v, cls) else v for k, v in kwargs.items()})

    def __matmul__(self, other: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self, other)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tensor, name)

    def __repr__(self) -> str:
        return f"SymmetricGraph({self.tensor!r})"
