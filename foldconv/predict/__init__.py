"""The prediction engine: outcomes decided from configurations alone, no convolution run.

Example:
    >>> from foldconv.predict import predict_fold
    >>> from foldconv.specs import ConvSpec
    >>> predict_fold(ConvSpec.make(2, 256, 64, 3, padding=1), 16).outcome.value
    'holds'
"""
from .rules import (
    Literal,
    Outcome,
    Prediction,
    fold_following,
    folded_output_alignment,
    orders_equivalent,
    predict_fold,
    predict_following,
    predict_space_to_depth,
)

__all__ = [
    "Literal", "Outcome", "Prediction", "fold_following", "folded_output_alignment", "orders_equivalent", "predict_fold",
    "predict_following", "predict_space_to_depth",
]
