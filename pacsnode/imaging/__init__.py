"""Reading films: from a DICOM object to calibrated, display-ready pixels.

The node and the training code both read films through :func:`read_film`.
"""

from pacsnode.imaging.reader import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SIDE,
    MIN_SIDE,
    SUPPORTED_TRANSFER_SYNTAXES,
    Film,
    FilmHeader,
    FilmSource,
    PixelSpacing,
    SpacingBasis,
    film_from_dataset,
    inspect_film,
    read_film,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SIDE",
    "MIN_SIDE",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "Film",
    "FilmHeader",
    "FilmSource",
    "PixelSpacing",
    "SpacingBasis",
    "film_from_dataset",
    "inspect_film",
    "read_film",
]
