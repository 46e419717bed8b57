"""Frozen sparse graphs kept on a RecBole model, shared by RecGOAT and the peers (FREEDOM, LGMRec).

A sparse tensor attribute does not follow ``.to(device)`` and does not survive ``deepcopy`` (RecBole's
``get_flops`` copies the model). So a graph is stored as the three dense CSR parts, registered as non-persistent
buffers ``<prefix>_crow``, ``<prefix>_col`` and ``<prefix>_val`` (checkpoints do not carry them: they are rebuilt
from the training split), and read back as a CSR view without a copy.
"""

from __future__ import annotations

import torch

__all__ = ["csr_parts", "GraphBuffers"]


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
