"""Parameters through a rewrite: where each new weight's entries come from, what keeps training the same, the check.

Every conversion rule builds its new weights as a fixed linear map of the old ones, and for all of them but
BatchNorm folding that map copies entries: each new entry is one old entry or a structural zero (a kernel padded to
a multiple of the stride, groups or dilation expanded). :func:`tensor_maps` reads that map from the rule's own build:
it builds the site once on weights whose entries are their own index (``1..N`` in float64, exact) and reads the
index back from each new entry, then once on random integers to confirm that the new entries are those copies and
nothing else (a product, a sum or a weight-dependent branch fails that).

What the map decides:

- a new tensor copies ``requires_grad`` from the old tensor it is a copy of (a frozen weight stays frozen);
- an old weight that is shared (tied, the same ``nn.Parameter`` in two layers) or parametrised
  (``torch.nn.utils.parametrize``: ``weight_norm``, ``spectral_norm``, ...) is kept: the new weight becomes a
  parametrisation of the very same parameter (:class:`Gathered` after the old parametrisations), so the
  rewritten model has the original's parameters, tied as they were; a site whose new weight is not a copy map
  cannot keep them and is not rewritten (the reason says so);
- training equivalence (:func:`trains_alike`): a new tensor trained on its own moves as the old one does only when
  the map is a bijection of entries (a permutation): one step of SGD or of an elementwise optimiser then updates
  each new entry as the old entry it copies. A structural zero gets a gradient of its own (training moves it off
  zero, out of the original's family); an old entry copied twice gets two updates; a folded BatchNorm's parameters
  are gone. Kept (parametrised) weights train as the original's by construction.

:func:`check_training` is the measurement: one backward pass of the original and of the rewritten model (eval
mode, float64, random integer weights, input and output weights), and the new model's gradient compared with the
old gradient mapped through the rewrite (the rewrite is linear in the weights, so the build itself, run on a copy
of the model that holds the gradients, maps them).

Example:
    >>> conv = torch.nn.Conv2d(2, 3, 4, stride=2)
    >>> from foldconv.equivalences import strided_to_spd
    >>> maps, problem = tensor_maps(torch.nn.Sequential(conv), lambda ref: strided_to_spd(ref[0]))
    >>> [(m.name, m.source, m.zeros) for m in maps], problem
    ([('conv.weight', '0.weight', 0), ('conv.bias', '0.bias', 0)], '')
    >>> trains_alike(maps, {"0.weight": True, "0.bias": True})
    (True, '')
"""
from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..errors import FoldError, first_line, fold_error
from ..tracing import module_device

__all__ = [
    "TensorMap", "Gathered", "TrainingCheck", "tensor_maps", "trains_alike", "effective_parameters", "keep_parameters",
    "check_training",
]

Build = Callable[[nn.Module], nn.Module]


@dataclass(frozen=True)
class TensorMap:
    """Where the entries of one new parameter come from.

    ``name``: the parameter's name in the built module; ``source``: the old parameter it copies (its name in the
    site: ``"conv1.weight"``; "" when ``problem``); ``index``: per new entry, the flat index of the old entry it
    holds (-1: a structural zero); ``problem``: why the new tensor is not a copy of one old tensor's entries;
    ``source_shape``: the old tensor's shape.
    """

    name: str
    source: str
    index: Optional[torch.Tensor]
    problem: str = ""
    source_shape: Tuple[int, ...] = ()

    @property
    def zeros(self) -> int:
        """How many entries are structural zeros (no old entry maps to them)."""
        return 0 if self.index is None else int((self.index < 0).sum())


class Gathered(nn.Module):
    """A parametrisation: a new weight whose entries are copies of the old weight's (``index``, -1: zero).

    Registered on the new layer with the old parameter (or its parametrisations) as the original, so the new
    weight is always computed from the old parameter: one parameter, trained and tied as before.

    Example:
        >>> gather = Gathered(torch.tensor([[1, -1], [0, 1]]), 2)
        >>> gather(torch.tensor([5.0, 7.0])).tolist()
        [[7.0, 0.0], [5.0, 7.0]]
    """

    def __init__(self, index: torch.Tensor, size: int):
        super().__init__()
        if not isinstance(index, torch.Tensor) or index.dtype != torch.long:
            raise fold_error("index", type(index).__name__, "must be a long tensor of flat indices (-1 for a zero)")
        # -1 points at one zero appended to the old entries: a gather and a constant pad, both exact in the checker
        self.register_buffer("index", torch.where(index < 0, torch.full_like(index, size), index))
        self.size = int(size)

    def forward(self, old: torch.Tensor) -> torch.Tensor:
        flat = F.pad(old.reshape(-1), (0, 1))
        return torch.index_select(flat, 0, self.index.reshape(-1)).reshape(self.index.shape)

    def extra_repr(self) -> str:
        return f"from {self.size} entries, shape {tuple(self.index.shape)}"


def effective_parameters(module: nn.Module) -> Dict[str, nn.Parameter]:
    """The parameters a module computes with, by name, without duplicates: a parametrised tensor under its own
    name (``"conv.weight"``, not ``"conv.parametrizations.weight.original0"``).

    Example:
        >>> wn = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv2d(1, 2, 3))
        >>> sorted(effective_parameters(torch.nn.Sequential(wn)))
        ['0.bias', '0.weight']
    """
    return dict(_plain(module).named_parameters())


def _unparametrize(module: nn.Module) -> None:
    """Replace every parametrisation of ``module`` by a plain parameter holding what it computes.

    Not ``parametrize.remove_parametrizations``: it deletes the tensor's property from the module's class, and a
    deep copy of a parametrised module shares that class with the original, which would lose its weight too."""
    values = {name: getattr(module, name).detach().clone() for name in module.parametrizations.keys()}
    flags = {name: any(p.requires_grad for p in module.parametrizations[name].parameters()) for name in values}
    module.__class__ = type(module).__bases__[0]  # the class register_parametrization derived from
    del module._modules["parametrizations"]  # noqa: SLF001 (the counterpart of the class swap above)
    for name, value in values.items():
        module.register_parameter(name, nn.Parameter(value, requires_grad=flags[name]))


def _plain(module: nn.Module) -> nn.Module:
    """A float64 copy with fresh parameters (ones: nothing is computed from the module's own values, so a check
    that records what ran on its random weights sees none of this) and every parametrisation replaced by a plain
    parameter of the shape it computes."""
    memo = {}
    for p in module.parameters():
        memo[id(p)] = nn.Parameter(torch.ones(p.shape, dtype=torch.float64 if p.is_floating_point() else p.dtype),
                                   requires_grad=p.requires_grad)
    plain = copy.deepcopy(module, memo).to(torch.float64)
    for sub in list(plain.modules()):
        if parametrize.is_parametrized(sub):
            _unparametrize(sub)
    return plain


def _new_tensors(built: nn.Module) -> List[Tuple[str, torch.Tensor]]:
    seen, out = set(), []
    for name, t in built.named_parameters():
        if id(t) not in seen and t.is_floating_point():
            seen.add(id(t))
            out.append((name, t.detach()))
    return out


def _fill(module: nn.Module, values: Callable[[torch.Tensor], torch.Tensor]) -> List[Tuple[str, int, int, Tuple[int, ...]]]:
    """Set the floating parameters, in order, to ``values(flat positions)``; returns (name, offset, numel, shape)."""
    spans, offset = [], 0
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not p.is_floating_point():
                continue
            positions = torch.arange(offset, offset + p.numel(), dtype=torch.long)
            p.copy_(values(positions).to(p.dtype).reshape(p.shape))
            spans.append((name, offset, p.numel(), tuple(p.shape)))
            offset += p.numel()
    return spans


def _scrambled(positions: torch.Tensor) -> torch.Tensor:
    """Distinct integers below 2**31 for distinct positions (a multiplicative hash: odd factor, power-of-two
    modulus), deterministic, with no random op: what confirms that a new entry is a copy and nothing else."""
    return (positions * 2654435761) % 2**31 + 1


def tensor_maps(reference: nn.Module, build: Build) -> Tuple[Tuple[TensorMap, ...], str]:
    """Per new parameter of ``build(reference)``, which old entries it copies; and a problem for the whole build
    ("" when it ran): a build that refuses other weights (a rewrite that holds for some weights only) says why.

    Only the reference's structure is read (shapes, attributes, buffers), never its parameters' values.

    Example:
        >>> maps, _ = tensor_maps(torch.nn.Conv2d(1, 1, 2, bias=False), lambda ref: torch.nn.Conv2d(1, 1, 2, bias=False))
        >>> maps[0].problem
        'is not a copy of old entries (its values are not their indices)'
    """
    coded, again = _plain(reference), _plain(reference)
    spans = _fill(coded, lambda positions: positions + 1)
    _fill(again, _scrambled)
    total = sum(n for _, _, n, _ in spans)
    try:
        with torch.no_grad():
            first, second = _new_tensors(build(coded)), dict(_new_tensors(build(again)))
    except FoldError as err:
        return (), f"the rewrite holds only for some weights ({first_line(err)})"
    except Exception as err:  # noqa: BLE001 (a build that cannot run on other values: no map, said so)
        return (), f"the rewrite could not be built on other weights ({first_line(err, with_type=True)})"
    maps = [_decode(name, value, second.get(name), spans, total) for name, value in first]
    return tuple(maps), ""


def _decode(name: str, value: torch.Tensor, check: Optional[torch.Tensor], spans: Sequence[Tuple[str, int, int, Tuple[int, ...]]],
            total: int) -> TensorMap:
    v = value.to(torch.float64).reshape(-1)
    if not bool(torch.isfinite(v).all()) or not bool((v == v.round()).all()) or bool(((v < 0) | (v > total)).any()):
        return TensorMap(name, "", None, "is not a copy of old entries (its values are not their indices)")
    index = v.long() - 1
    used = index[index >= 0]
    owners = [(old, o, shape) for old, o, n, shape in spans if bool(((used >= o) & (used < o + n)).any())]
    if len(owners) > 1:
        return TensorMap(name, "", None, f"mixes entries of {' and '.join(sorted(old for old, _, _ in owners))}")
    expected = torch.where(index < 0, torch.zeros_like(index), _scrambled(index))
    if check is None or check.shape != value.shape or not torch.equal(check.to(torch.float64).reshape(-1), expected.to(torch.float64)):
        return TensorMap(name, "", None, "is not a copy of old entries (its values depend on the weights' values)")
    if not owners:
        return TensorMap(name, "", index.reshape(value.shape), "holds no old entry (a new tensor of zeros)")
    source, offset, shape = owners[0]
    local = torch.where(index >= 0, index - offset, index)
    return TensorMap(name, source, local.reshape(value.shape), source_shape=shape)


def trains_alike(maps: Sequence[TensorMap], trainable: Mapping[str, bool], *, problem: str = "",
                 kept: Sequence[str] = ()) -> Tuple[bool, str]:
    """Whether the new tensors, trained on their own, move as the old ones do, and why not.

    ``trainable``: every old parameter of the site with its ``requires_grad``; ``kept``: new tensors that are
    parametrisations of their old tensor (they train as it does). True needs each trainable old entry copied
    exactly once, into a trainable tensor with no structural zeros.

    Example:
        >>> index = torch.tensor([0, 1, -1])
        >>> trains_alike([TensorMap("w", "conv.weight", index)], {"conv.weight": True})
        (False, 'w has 1 structural zero(s) of 3 entries (no old entry maps to them): training would move them off zero')
    """
    if problem:
        return False, problem
    copies: Counter = Counter()
    sources = set()
    for m in maps:
        if m.problem:
            return False, f"{m.name} {m.problem}"
        if m.name in kept:
            sources.add(m.source)
            continue
        if not trainable.get(m.source, False):
            continue
        sources.add(m.source)
        if m.zeros:
            return False, (f"{m.name} has {m.zeros} structural zero(s) of {m.index.numel()} entries (no old entry maps to them): "
                           "training would move them off zero")
        # two tensor ops and plain ints: element by element, a recording dispatch mode (a check) sees each read
        values, counts = torch.unique(m.index[m.index >= 0], return_counts=True)
        for i, n in zip(values.tolist(), counts.tolist()):
            copies[(m.source, i)] += n
    twice = sorted({source for (source, _), n in copies.items() if n > 1})
    if twice:
        return False, f"entries of {twice[0]} are copied more than once: each copy would get its own update"
    lost = sorted(old for old, grad in trainable.items() if grad and old not in sources)
    if lost:
        return False, f"{lost[0]} is not a parameter of the rewrite (folded into another): its training is gone"
    return True, ""


def _split(name: str) -> Tuple[str, str]:
    owner, _, attr = name.rpartition(".")
    return owner, attr


def _attach(target: nn.Module, attr: str, gather: Gathered, owner: nn.Module, old_attr: str, shape: Tuple[int, ...]) -> None:
    """Make ``target.attr`` the gather of ``owner.old_attr``: the very parameter (or its parametrisations)."""
    if parametrize.is_parametrized(owner, old_attr):
        old = owner.parametrizations[old_attr]
        # Registered on a placeholder of the old shape, so that each old parametrisation sees what it was made
        # for; then the old originals (the parameters themselves) replace the placeholders.
        device = next(old.parameters()).device
        setattr(target, attr, nn.Parameter(torch.ones(shape, dtype=getattr(target, attr).dtype, device=device)))
        for step in old:
            parametrize.register_parametrization(target, attr, step, unsafe=True)
        new = target.parametrizations[attr]
        names = ["original"] if old.is_tensor else [f"original{i}" for i in range(old.ntensors)]
        for name in names:
            setattr(new, name, getattr(old, name))
    else:
        setattr(target, attr, getattr(owner, old_attr))
    parametrize.register_parametrization(target, attr, gather, unsafe=True)


def keep_parameters(built: nn.Module, get: Callable[[str], nn.Module], keep: Sequence[TensorMap],
                    frozen: Mapping[str, bool]) -> nn.Module:
    """``built`` with each tensor of ``keep`` a parametrisation of its old tensor (read with ``get(owner path)``)
    and every other new tensor's ``requires_grad`` set from ``frozen`` (new name -> requires_grad). Modified in place.

    Example:
        >>> old = torch.nn.Conv2d(1, 1, 2, bias=False)
        >>> new = torch.nn.Conv2d(1, 1, 2, bias=False)
        >>> keep = [TensorMap("weight", "0.weight", torch.arange(4).reshape(1, 1, 2, 2).flip(-1), source_shape=(1, 1, 2, 2))]
        >>> new = keep_parameters(new, torch.nn.Sequential(old).get_submodule, keep, {})
        >>> new.parametrizations.weight.original is old.weight, torch.equal(new.weight, old.weight.flip(-1))
        (True, True)
    """
    targets = {_split(m.name)[0] for m in keep}
    for path in targets:  # a build that copied a parametrised layer: plain tensors first, then ours
        if parametrize.is_parametrized(built.get_submodule(path)):
            _unparametrize(built.get_submodule(path))
    for m in keep:
        owner_path, old_attr = _split(m.source)
        owner = get(owner_path)
        target_path, attr = _split(m.name)
        target = built.get_submodule(target_path)
        device = getattr(target, attr).device
        _attach(target, attr, Gathered(m.index.to(device), math.prod(m.source_shape)), owner, old_attr, m.source_shape)
    names = {m.name for m in keep}
    for name, p in built.named_parameters():
        if name not in names and name in frozen:
            p.requires_grad_(frozen[name])
    return built


@dataclass(frozen=True)
class TrainingCheck:
    """Does the rewritten model train as the original does? One backward pass of each, compared.

    ``same``: the new model's gradient equals the old gradient mapped through the rewrite, for every parameter;
    ``exact``: every gradient was an integer compared exactly (else within 1e-9 relative, a non-polynomial
    model); ``differing``: the new parameters whose gradients differ; ``parameters`` / ``trainable``: element
    counts (original, rewritten), shared parameters counted once; ``reason``: why not, in the model's terms.
    """

    same: bool
    exact: bool
    differing: Tuple[str, ...]
    parameters: Tuple[int, int]
    trainable: Tuple[int, int]
    reason: str = ""

    def describe(self) -> str:
        """One phrase for a summary line."""
        counts = f"parameters {self.parameters[0]:,} -> {self.parameters[1]:,}, trainable {self.trainable[0]:,} -> {self.trainable[1]:,}"
        if self.same:
            return f"trains the same (gradients equal after one step, {'exact' if self.exact else 'float64'}; {counts})"
        if self.reason.startswith("not determined"):
            return f"training NOT DETERMINED ({self.reason}; {counts})"
        return f"trains DIFFERENTLY ({self.reason}; {counts})"


def _counts(model: nn.Module) -> Tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _grads(model: nn.Module, x: torch.Tensor, weights: Optional[torch.Tensor], seed: int) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    for p in model.parameters():
        p.grad = None
    y = model(x)
    if not isinstance(y, torch.Tensor):
        raise fold_error("model", type(model).__name__, f"must return one tensor to compare gradients, not {type(y).__name__}")
    if weights is None:
        gen = torch.Generator().manual_seed(seed + 1)
        weights = torch.randint(-3, 4, tuple(y.shape), generator=gen).to(device=y.device, dtype=y.dtype)
    if weights.shape != y.shape:
        raise fold_error("model", type(model).__name__, f"the rewritten model's output shape {tuple(y.shape)} is not the original's {tuple(weights.shape)}")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if trainable and y.requires_grad:
        (y * weights).sum().backward()
    return {name: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone()
            for name, p in model.named_parameters()}, weights


def _integers(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                p.copy_(torch.randint(-3, 4, tuple(p.shape), generator=gen).to(p.dtype))
    return model


def check_training(model: nn.Module, build: Build, input_shape: Sequence[int], *, seed: int = 0) -> TrainingCheck:
    """Whether ``build(model)`` (a rewrite, linear in the weights) trains as ``model``: the gradient of every new
    parameter after one backward pass equals the original's gradient mapped through the rewrite.

    Runs in eval mode (dropout off, BatchNorm on its running statistics) and float64, on random integer weights
    (the model's own where the rewrite holds for those only), a random integer input and random integer weights on
    the output. ``build`` may modify its argument (it gets copies).

    Example:
        >>> from foldconv.equivalences import strided_to_spd
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 4, stride=2))
        >>> check_training(net, lambda ref: torch.nn.Sequential(strided_to_spd(ref[0])), (1, 2, 8, 8)).same
        True
        >>> padded = check_training(torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, stride=2)),
        ...                         lambda ref: torch.nn.Sequential(strided_to_spd(ref[0])), (1, 2, 8, 8))
        >>> padded.same, padded.differing  # the 3x3 kernel padded to 4x4: its zero taps get gradients
        (False, ('0.conv.weight',))
    """
    own = copy.deepcopy(model).to(torch.float64).eval()
    old = _integers(copy.deepcopy(own), seed)
    try:
        new = build(copy.deepcopy(old)).eval()
    except FoldError:  # the rewrite holds for the model's own weights only
        old = own
        new = build(copy.deepcopy(old)).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-3, 4, tuple(input_shape), generator=gen).to(torch.float64).to(module_device(old))
    counts = (_counts(old), _counts(new))
    parameters, trainable = (counts[0][0], counts[1][0]), (counts[0][1], counts[1][1])
    while True:
        old_grads, weights = _grads(old, x, None, seed)
        new_grads, _ = _grads(new, x, weights, seed)
        holding = copy.deepcopy(old)
        with torch.no_grad():
            for (name, p) in holding.named_parameters():
                p.copy_(old_grads[name])
        try:
            mapped = dict(build(holding).named_parameters())
        except FoldError as err:
            return TrainingCheck(False, False, (), parameters, trainable, f"the gradient leaves the weights the rewrite holds for: {first_line(err)}")
        # A parameter whose gradient is zero on both sides proves nothing: integer weights saturate a deep model
        # (ReLU6 clamps every unit below the head), and zero equals zero whatever the rewrite did to the taps.
        silent = [name for name, p in new.named_parameters() if p.requires_grad and not new_grads[name].any()
                  and (mapped.get(name) is None or not mapped[name].detach().any())]
        if not silent:
            break
        if old is not own:  # the model's own weights keep it in its working range
            old = own
            new = build(copy.deepcopy(old)).eval()
            continue
        return TrainingCheck(False, False, tuple(silent), parameters, trainable,
                             f"not determined: no gradient reaches {silent[0]}"
                             + (f" and {len(silent) - 1} more parameter(s)" if len(silent) > 1 else "")
                             + " on the check's input")
    exact = all(bool((g == g.round()).all()) for g in list(old_grads.values()) + list(new_grads.values()))
    differing, first = [], ""
    for name, grad in new_grads.items():
        want = mapped.get(name)
        if want is None or want.shape != grad.shape:
            differing.append(name)
            first = first or f"{name}: no parameter of the original maps to it"
            continue
        want = want.detach()
        same = torch.equal(grad, want) if exact else torch.allclose(grad, want, rtol=1e-9, atol=1e-9 * max(1.0, (float(want.abs().max()) if want.numel() else 0.0)))
        if not same:
            differing.append(name)
            bad = int((grad != want).sum()) if exact else int((~torch.isclose(grad, want, rtol=1e-9)).sum())
            first = first or f"{name}: gradient differs at {bad} of {grad.numel()} entries"
    return TrainingCheck(not differing, exact, tuple(differing), parameters, trainable, first)

