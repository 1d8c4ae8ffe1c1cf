"""Live bytes while :func:`~foldconv.analysis.counting.count` runs: the peak activation memory of a pass.

What is counted: every storage that an op of the pass allocates (its ``nbytes``), from the moment the op
returns until the storage is freed. A storage is freed when nothing holds it any more, neither Python
nor C++: autograd's saved tensors keep theirs alive until backward has used them, which is exactly why a
training forward needs more memory than an inference one. Lifetimes come from a weak reference to each
storage (torch keeps one Python object per storage, so the callback fires when the storage itself dies).
The peak is taken after every op, when its inputs and its outputs are alive at once, as for an allocator
that frees at once and never caches (real allocators round sizes up and keep freed blocks).

Not counted: parameters and buffers (``CountReport.weight_bytes`` / ``buffer_bytes``), the input tensors
(they exist before the pass), views and in-place results (they allocate nothing). Counted: the output,
scratch (``aten.empty*``), and in a backward pass the gradients it returns (of parameters and of inputs
that require grad), which stay alive to the end.

Example:
    >>> import torch
    >>> live = LiveBytes()
    >>> a = torch.empty(10, device="meta"); live.add(a)
    >>> b = torch.empty(5, device="meta"); live.add(b)
    >>> del a
    >>> live.live, live.peak
    (20, 60)
"""
from __future__ import annotations

import weakref
from typing import Any, Dict

import torch

__all__ = ["LiveBytes"]


class LiveBytes:
    """Bytes of the storages handed to :meth:`add` that are still alive, and the most there ever were."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self._sizes: Dict[int, int] = {}
        self._refs: Dict[int, Any] = {}

    def add(self, tensor: torch.Tensor) -> None:
        """Track the storage of a tensor an op just created (a storage already tracked is not added twice)."""
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._sizes:
            return
        nbytes = storage.nbytes()
        self._sizes[key] = nbytes
        self._refs[key] = weakref.ref(storage, lambda _, key=key: self._free(key))
        self.live += nbytes
        if self.live > self.peak:
            self.peak = self.live

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)
        self._refs.pop(key, None)

    def reset_peak(self) -> None:
        """Start a new phase: the peak restarts from what is alive now.

        Example:
            >>> live = LiveBytes(); t = torch.empty(4, device="meta"); live.add(t); live.reset_peak()
            >>> live.peak
            16
        """
        self.peak = self.live
