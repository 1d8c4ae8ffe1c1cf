"""The prediction engine: outcomes decided from configurations alone, no convolution run.

=================== ======================================================================================
module              what it answers
=================== ======================================================================================
``outcome``         :class:`Outcome`, :class:`Prediction` (the one result type), :class:`SizeFix`
``fold``            :func:`predict_fold`: the literal fold of a conv and fold_conv's conditioned form
``windows``         the integer verdicts behind it (channel maps in closed form, per-axis window maps)
``following``       the following-layer rules (:data:`FOLLOWING_RULES`): :func:`predict_following`,
                    :func:`fold_following`, :func:`conditioned_following` (each with per-call ``rules=``),
                    :func:`register_following_rule`, example layers
``layers``          built-in following-layer rules: pointwise, normalisation, dropout (RULE-1..5)
``resample``        built-in following-layer rules: pooling, upsampling (RULE-6, RULE-7)
``space_to_depth``  :func:`predict_space_to_depth`: the unfold direction on any map size (RULE-8)
=================== ======================================================================================

Literal verdicts are :class:`foldconv.check.Verdict` values, the same the equivalence checker reports.

Example:
    >>> from foldconv.predict import predict_fold
    >>> from foldconv.specs import ConvSpec
    >>> predict_fold(ConvSpec.make(2, 256, 64, 3, padding=1), 16).outcome.value
    'holds'
"""
from . import layers  # noqa: F401  (registers the built-in rules of pointwise, norm and dropout layers, before resample's)
from .fold import predict_fold
from .following import (
    FOLLOWING_RULES,
    FollowingRule,
    conditioned_following,
    fold_following,
    following_example,
    following_examples,
    following_rule,
    predict_following,
    register_following_rule,
)
from .outcome import Outcome, Prediction, SizeFix
from .resample import ChannelGroupReduce
from .space_to_depth import predict_space_to_depth
from .windows import folded_output_alignment, orders_equivalent

__all__ = [
    "ChannelGroupReduce", "FOLLOWING_RULES", "FollowingRule", "Outcome", "Prediction", "SizeFix", "conditioned_following", "fold_following",
    "folded_output_alignment", "following_example", "following_examples", "following_rule", "orders_equivalent",
    "predict_fold", "predict_following", "predict_space_to_depth", "register_following_rule",
]
