"""Memory that :func:`~foldconv.analysis.counting.count` reports: the peak activation memory of a pass (live
bytes), and the parameters and buffers each module owns (:func:`owned_tensors`).

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
from collections import Counter
from typing import Any, Dict, Optional

import torch
from torch import nn

__all__ = ["LiveBytes", "owned_tensors"]


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


def owned_tensors(names: Dict[nn.Module, str], dtype: Optional[torch.dtype]) -> Dict[str, Counter]:
    """Parameters and buffers per module, each tensor object charged once, to the first module owning it.

    ``dtype`` (when given) is the dtype floating tensors are counted at; ``names`` maps each module to its
    qualified name, in the order to charge them.

    Example:
        >>> from torch import nn
        >>> lin = nn.Linear(3, 2)
        >>> dict(owned_tensors({lin: "fc"}, torch.float16)["fc"])
        {'params': 8, 'weight_bytes': 16, 'trainable': 8}
    """
    seen: set = set()
    owned: Dict[str, Counter] = {}

    def nbytes(t: torch.Tensor) -> int:
        return t.numel() * (dtype.itemsize if dtype is not None and t.is_floating_point() else t.element_size())

    for module, qualified in names.items():
        if not module._parameters and not module._buffers:
            continue
        c: Counter = Counter()
        here: set = set()  # a tensor registered twice in one module counts once (as parameters() does)
        for p in module._parameters.values():
            if p is None or id(p) in here:
                continue
            here.add(id(p))
            if id(p) in seen:
                c["shared"] += p.numel()
                continue
            seen.add(id(p))
            c["params"] += p.numel()
            c["weight_bytes"] += nbytes(p)
            c["trainable" if p.requires_grad else "frozen"] += p.numel()
        for b in module._buffers.values():
            if b is not None and id(b) not in seen:
                seen.add(id(b))
                c["buffer_bytes"] += nbytes(b)
        if c:
            owned[qualified] = c
    return owned
