"""What a rewrite did: one row per site (pattern, before/after, costs, verdict) and the whole-model verdict.

Example:
    >>> site = SiteReport("strided_to_spd", "Conv2d 3x3 s2", "conv", (1, 3, 8, 8), "Conv2d(3->4, k=(3, 3), s=(2, 2), p=(1, 1))",
    ...                   "SpaceToDepth(r=(2, 2), order='c rh rw') + Conv2d(12->4, k=(2, 2), s=(1, 1), p=(0, 0))",
    ...                   112, 196, 1728, 3136, applied=False, reason="not verified")
    >>> report = RewriteReport("Net", (1, 3, 8, 8), ("strided_to_spd",), True, "", (site,), None)
    >>> report.applied, report.ok
    (0, True)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from torch import nn

from .._tables import markdown_table
from ..check import EquivalenceReport, Verdict
from .params import TrainingCheck

__all__ = ["SiteReport", "RewriteReport"]


@dataclass(frozen=True)
class SiteReport:
    """One site of a rewrite (or one part of a site, ``part_of`` naming the site: a stage's layers).

    ``pattern``: the model-level name ("slice+cat+Conv2d (Focus)", "Conv2d+PixelShuffle (sub-pixel)", "Conv2d 7x7
    s2", ...); ``location``: module path of the main layer; ``before``/``after``: spec text; params are the site's
    layers' and MACs one forward pass of them on ``input_shape`` (the site's own input, batch included); ``reason``: why it was not applied; ``verdict``: the
    site's check (None when not verified or not built) and ``exact`` whether it was proved exactly;
    ``trains_same``: an applied site's new weights, trained, move as the old ones do (each trainable old entry
    copied once, no structural zero, or the old parameters kept; :func:`foldconv.surgery.params.trains_alike`),
    ``training`` why not. None when not applied. ``changes``: what building the site changed in the model besides
    the rule's own replacement (a stage fold's BatchNorms folded into their convs first), "" when nothing.
    ``order``: the channel order of the site's own layout op (``"rh rw c"`` for timm's space-to-depth), "" when it
    has none: the order the way back restores (:func:`foldconv.surgery.inverse_rules`). ``before_module`` /
    ``after_module``: the site alone as a module, input to output, as the model had it and as built (None when not
    built): what the site's own steps export to (:func:`foldconv.surgery.onnx_ops`).
    """

    rule: str
    pattern: str
    location: str
    input_shape: Tuple[int, ...]
    before: str
    after: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    applied: bool
    reason: str = ""
    verdict: Optional[Verdict] = None
    exact: bool = False
    check: Optional[EquivalenceReport] = None
    part_of: str = ""
    trains_same: Optional[bool] = None
    training: str = ""
    changes: str = ""
    order: str = ""
    before_module: Optional[nn.Module] = field(default=None, repr=False, compare=False)
    after_module: Optional[nn.Module] = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """Its check found no difference (not checked counts as none; a part row is judged with its site). A site
        found not equivalent is never applied: its row is not ok, and the model keeps its layers there."""
        return self.part_of != "" or self.verdict in (None, Verdict.EQUIVALENT)

    def __bool__(self) -> bool:
        return self.ok

    def row(self) -> Dict[str, Any]:
        """The table row (CSV / Markdown)."""
        return {
            "rule": self.rule, "pattern": self.pattern, "location": self.location, "input_shape": self.input_shape,
            "before": self.before, "after": self.after, "params_before": self.params_before, "params_after": self.params_after,
            "macs_before": self.macs_before, "macs_after": self.macs_after, "applied": self.applied, "reason": self.reason,
            "verdict": "" if self.verdict is None else self.verdict.value, "exact": self.exact, "part_of": self.part_of,
            "trains_same": "" if self.trains_same is None else self.trains_same, "training": self.training,
            "changes": self.changes, "order": self.order,
        }


@dataclass(frozen=True)
class RewriteReport:
    """The report of :func:`foldconv.surgery.rewrite`: per-site rows and the whole-model verification.

    ``traced``: torch.fx traced the model (False: module-level replacement, ``fallback_reason`` says why);
    ``verification``: the whole model (eval mode) against the original, None when ``verify=False``;
    ``verification_note``: how that verdict was reached (exact for all weights, or sampled and why).
    ``training``: whether the rewritten model trains as the original (one backward pass of each, the gradients
    compared through the rewrite; :func:`foldconv.surgery.params.check_training`), None when ``verify=False``
    or nothing was rewritten; ``withdrawn``: why the whole rewrite was taken back ("" when it was not): the model
    returned is then a copy of the original.
    ``ok`` (and ``bool(report)``): no check found a difference, at any site or for the whole model (with
    ``verify=False``: nothing was checked, which proves nothing). The returned model computes the original's
    function either way.
    """

    model: str
    input_shape: Tuple[int, ...]
    rules: Tuple[str, ...]
    traced: bool
    fallback_reason: str
    sites: Tuple[SiteReport, ...]
    verification: Optional[EquivalenceReport]
    verification_note: str = ""
    training: Optional[TrainingCheck] = None
    withdrawn: str = ""

    @property
    def main_sites(self) -> Tuple[SiteReport, ...]:
        """The sites the rules found, each once: the rows of a site's parts (a stage's layers) left out. Every
        count of sites (``applied``, the summary, the apps' tables and figures) counts these.

        Example:
            >>> stage = SiteReport("fold_stage", "stage", "layer1", (1, 4, 8, 8), "", "", 0, 0, 0, 0, applied=True)
            >>> part = SiteReport("fold_stage", "Conv2d (folded)", "layer1.conv", (1, 4, 8, 8), "", "", 0, 0, 0, 0,
            ...                   applied=True, part_of="layer1")
            >>> report = RewriteReport("Net", (1, 4, 8, 8), ("fold_stage",), True, "", (stage, part), None)
            >>> len(report.sites), len(report.main_sites), report.applied
            (2, 1, 1)
        """
        return tuple(s for s in self.sites if not s.part_of)

    @property
    def applied(self) -> int:
        """How many sites were rewritten (parts of a site not counted)."""
        return sum(1 for s in self.main_sites if s.applied)

    @property
    def ok(self) -> bool:
        """No site check and no whole-model check found a difference (and nothing was withdrawn)."""
        return all(s.ok for s in self.sites) and not self.withdrawn and (self.verification is None or self.verification.ok)

    def __bool__(self) -> bool:
        return self.ok

    def rows(self) -> List[Dict[str, Any]]:
        """One row per site (and per part of a site), for CSV or Markdown."""
        return [s.row() for s in self.sites]

    def to_markdown(self) -> str:
        """The summary line and the per-site table."""
        return self.summary() + "\n\n" + markdown_table(self.rows())

    def summary(self) -> str:
        """One line: what was rewritten and the verdict."""
        sites = self.main_sites
        how = "traced with torch.fx" if self.traced else f"module-level replacement ({self.fallback_reason})"
        text = f"{self.model}: {self.applied} of {len(sites)} site(s) rewritten by {', '.join(self.rules)}; {how}"
        refused = sum(1 for s in sites if not s.applied and s.verdict not in (None, Verdict.EQUIVALENT))
        if refused:
            text += f"; {refused} site(s) not applied because their check found a difference"
        if self.verification is None:
            return text + (f"; WITHDRAWN, the original returned unchanged: {self.withdrawn}" if self.withdrawn else "; not verified")
        v = self.verification
        how = "exact" if v.exact else "sampled"
        if v.exact and v.ok and v.false_equivalent_bound is not None:
            how += f", P(false equivalent) <= {v.false_equivalent_bound:.1e}"
        if v.first_mismatch is not None:
            how += f", first mismatch at output index {v.first_mismatch}"
        text = f"{text}; whole model {v.verdict.value} ({how})" + (f": {self.verification_note}" if self.verification_note else "")
        if self.withdrawn:
            return f"{text}; WITHDRAWN, the original returned unchanged: {self.withdrawn}"
        return text + (f"; {self.training.describe()}" if self.training is not None else "")
