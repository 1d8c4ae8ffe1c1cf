"""Training cost: the backward pass's ops, priced and charged to the module whose forward built them.

``count(..., backward=True)`` runs the forward with autograd recording, then ``torch.autograd.grad`` of
``loss = sum(out.sum() for every floating output)`` with respect to every parameter (and every example
input) that requires grad, under the same dispatch mode. The loss itself and its seed gradient are made
outside the mode (they belong to no model). Nothing is accumulated into ``.grad``: the model is untouched.

Each backward op is charged to a module through the autograd graph: a node belongs to the innermost
module whose forward created it (the nodes reachable from a module's outputs that no earlier module
claimed; the nodes made by a parent between its children are claimed when the next child starts), and
the engine says which node is running (``torch._C._current_autograd_node``).

Cost rules of backward ops (conventions, as for the forward in :mod:`~foldconv.analysis.counting.ops`):

- ``convolution_backward``: one forward's MACs for the input gradient and one for the weight gradient
  (each only when ``output_mask`` asks for it), the bias gradient 1 FLOP per ``grad_output`` element.
  ``FlopCounterMode`` agrees for ``groups = 1``; for a grouped conv its weight-gradient term is ``groups``
  times larger (it multiplies by all input channels, not those of one group), so there the two differ by
  exactly ``(groups - 1)`` weight-gradient MACs.
- matrix products in backward are plain ``mm``/``bmm`` (forward rules); fused attention backward counts
  its five matrix products, as ``FlopCounterMode`` does.
- elementwise backward ops (``threshold_backward``, ``gelu_backward``, ...) cost 2 per output element
  (the local derivative and its product with the incoming gradient); norm and softmax backward twice
  their forward per-element rate; pooling backward as its forward (window or input elements); scatter-
  type gradients (max-pool indices, embedding, index_put) 1 per ``grad_output`` element (a forward
  ``index_put``, the same op, 1 per element of the tensor it writes into); padding and
  upsampling gradients 1 per input element (each gathers and adds the gradients of its copies);
  slicing gradients (``slice_backward``, ``select_backward``, ...) only move data: 0.

Example:
    >>> import torch
    >>> from foldconv.analysis.counting import count
    >>> rep = count(torch.nn.Linear(8, 4), (2, 8), backward=True)
    >>> rep.macs, rep.backward_macs   # forward x W^T; backward only dW (the input needs no gradient)
    (64, 64)
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

import torch
from torch.utils._pytree import tree_flatten

from ...errors import fold_error
from .ops import OpCost, first_numel, per_output, register_aten, window_rule, zero_cost

__all__ = ["GraphOwners", "loss_of", "BACKWARD_MAC_OPS"]


class GraphOwners:
    """Which module's forward created each autograd node (see the module docstring)."""

    def __init__(self) -> None:
        self.owner: Dict[Any, str] = {}

    def claim(self, value: Any, name: str) -> None:
        """Give every node reachable from the tensors in ``value`` that has no owner yet to ``name``.

        Example:
            >>> x = torch.ones(2, requires_grad=True)
            >>> owners = GraphOwners(); y = (x * 2).exp(); owners.claim(y, "net")
            >>> sorted(type(n).__name__ for n in owners.owner)
            ['AccumulateGrad', 'ExpBackward0', 'MulBackward0']
        """
        stack = [t.grad_fn for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor) and t.grad_fn is not None]
        owner = self.owner
        while stack:
            node = stack.pop()
            if node is None or node in owner:
                continue
            owner[node] = name
            stack.extend(parent for parent, _ in node.next_functions)

    def running(self) -> Optional[str]:
        """The owner of the node the autograd engine is running now (None outside backward or if unknown)."""
        node = torch._C._current_autograd_node()
        return None if node is None else self.owner.get(node)


def loss_of(output: Any) -> torch.Tensor:
    """``sum(t.sum())`` over the floating tensors of ``output`` that require grad (a FoldError if none does).

    Example:
        >>> loss_of((torch.ones(2, requires_grad=True), torch.ones(3, dtype=torch.long))).item()
        2.0
    """
    parts = [
        t.sum() for t in tree_flatten(output)[0]
        if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad
    ]
    if not parts:
        raise fold_error(
            "backward", True, "the model's output does not depend on any parameter or input that requires grad"
        )
    return parts[0] if len(parts) == 1 else sum(parts[1:], parts[0])


# ------------------------------------------------------------------------------------------ cost rules


def _conv_backward(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
    grad_out, x, w = inputs[0], inputs[1], inputs[2]
    transposed, mask = bool(inputs[7]), inputs[10]
    # The forward's MACs (same convention as the forward conv rule in ops): per input position if transposed.
    spatial = x.shape[2:] if transposed else grad_out.shape[2:]
    forward = x.shape[0] * math.prod(w.shape) * math.prod(spatial)
    macs = forward * (int(bool(mask[0])) + int(bool(mask[1])))
    return OpCost(macs, grad_out.numel() if mask[2] else 0)


def _sdpa_backward(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
    q, k, v = inputs[1], inputs[2], inputs[3]  # inputs[0] is grad_out
    b, h, lq, e = q.shape
    s, ev = k.shape[-2], v.shape[-1]
    # Recompute Q K^T, then dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q.
    return OpCost(b * h * (lq * s * e + lq * s * ev + s * lq * ev + lq * s * e + e * lq * s))


def _grad_output_elements(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
    return OpCost(0, first_numel(inputs[0]))


def _input_elements(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
    return OpCost(0, first_numel(outputs))


def _pool_backward(dims: int, kernel_at: int):
    window = window_rule(dims)

    def handle(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
        # As the forward: one operation per window element per (forward) output = grad_output element.
        return window((None, inputs[kernel_at]), (inputs[0],))

    return handle


_ELEMENTWISE_BACKWARD = (
    "threshold_backward", "gelu_backward", "silu_backward", "sigmoid_backward", "tanh_backward",
    "hardswish_backward", "hardsigmoid_backward", "hardtanh_backward", "leaky_relu_backward", "elu_backward",
    "softplus_backward", "mish_backward", "native_dropout_backward", "glu_backward", "_prelu_kernel_backward",
    "log_sigmoid_backward", "logit_backward", "rrelu_with_noise_backward",
)
_BATCH_NORM_BACKWARD = ("native_batch_norm_backward", "batch_norm_backward", "cudnn_batch_norm_backward",
                        "miopen_batch_norm_backward")
_OTHER_NORM_BACKWARD = ("native_layer_norm_backward", "native_group_norm_backward", "_fused_rms_norm_backward")
_SOFTMAX_BACKWARD = ("_softmax_backward_data", "_log_softmax_backward_data")
_SCATTER_BACKWARD = (
    "max_pool2d_with_indices_backward", "max_pool3d_with_indices_backward", "embedding_dense_backward",
    "embedding_backward", "adaptive_max_pool2d_backward", "adaptive_max_pool3d_backward", "index_add",
    "scatter_add", "index_put", "_unsafe_index_put", "index_put_", "_index_put_impl_",
)
_INTERPOLATE_BACKWARD = (
    "upsample_bilinear2d_backward", "upsample_bicubic2d_backward", "upsample_linear1d_backward",
    "upsample_trilinear3d_backward", "_upsample_bilinear2d_aa_backward", "_upsample_bicubic2d_aa_backward",
    "reflection_pad1d_backward", "reflection_pad2d_backward", "reflection_pad3d_backward",
    "replication_pad1d_backward", "replication_pad2d_backward", "replication_pad3d_backward",
    "upsample_nearest1d_backward", "upsample_nearest2d_backward", "upsample_nearest3d_backward",
    "_upsample_nearest_exact1d_backward", "_upsample_nearest_exact2d_backward", "_upsample_nearest_exact3d_backward",
)
# (the forward table prices new_empty_strided, _unsafe_view and squeeze at 0 already)
_MOVE_BACKWARD = (
    "select_backward", "slice_backward", "unfold_backward", "diagonal_backward", "as_strided_scatter",
    "masked_scatter", "index_select_backward", "expand_copy",
)
_SDPA_BACKWARD = (
    "_scaled_dot_product_efficient_attention_backward", "_scaled_dot_product_flash_attention_backward",
    "_scaled_dot_product_cudnn_attention_backward", "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_fused_attention_overrideable_backward",
)

register_aten(["convolution_backward", "convolution_backward_overrideable"], _conv_backward)
register_aten(_SDPA_BACKWARD, _sdpa_backward)
register_aten(_ELEMENTWISE_BACKWARD, per_output(2))
register_aten(_BATCH_NORM_BACKWARD, lambda i, o: OpCost(0, 4 * first_numel(i[1])))
register_aten(_OTHER_NORM_BACKWARD, lambda i, o: OpCost(0, 10 * first_numel(i[1])))
register_aten(_SOFTMAX_BACKWARD, per_output(6))
register_aten(["avg_pool2d_backward"], _pool_backward(2, 2))
register_aten(["avg_pool3d_backward"], _pool_backward(3, 2))
register_aten(["_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward"], _input_elements)
register_aten(_SCATTER_BACKWARD, _grad_output_elements)
register_aten(_INTERPOLATE_BACKWARD, _input_elements)
register_aten(_MOVE_BACKWARD, zero_cost)

#: Backward ops that do multiply-adds (matrix products in backward are mm/bmm, already MAC ops).
BACKWARD_MAC_OPS = frozenset(("convolution_backward", "convolution_backward_overrideable") + _SDPA_BACKWARD)
