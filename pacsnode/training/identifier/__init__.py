"""Training and evaluation of the reference-vertebra identifier (C2, S1 or other)."""

from pacsnode.training.identifier.data import (
    IdentifierSet,
    class_of,
    identifier_patches,
    reversed_frame,
)
from pacsnode.training.identifier.evaluate import (
    markdown_report,
    predict_probabilities,
    score_identifier,
)
from pacsnode.training.identifier.train import (
    IdentifierConfig,
    class_weights,
    sample_weights,
    train_identifier,
)

__all__ = [
    "IdentifierConfig",
    "IdentifierSet",
    "class_of",
    "class_weights",
    "identifier_patches",
    "markdown_report",
    "predict_probabilities",
    "reversed_frame",
    "sample_weights",
    "score_identifier",
    "train_identifier",
]
