"""Which part of the spine a film shows, as the SNOMED CT concept a SEG segment and an SR
finding name, worked out from the film's header unless the caller knows better.
"""

from __future__ import annotations

import enum

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

__all__ = ["SPINE_COLOUR_RGB", "SpineRegion", "region_of_film", "resolve_region"]


class SpineRegion(enum.StrEnum):
    """The spine regions a lateral film is taken of; SPINE when it cannot be told."""

    CERVICAL = "cervical"
    THORACIC = "thoracic"
    LUMBAR = "lumbar"
    SPINE = "spine"

    @property
    def code(self) -> Code:
        """The SNOMED CT concept (CID 7151 Segmentation Property Types)."""
        return _CODES[self]


_CODES = {
    SpineRegion.CERVICAL: codes.SCT.CervicalSpine,  # 122494005
    SpineRegion.THORACIC: codes.SCT.ThoracicSpine,  # 122495006
    SpineRegion.LUMBAR: codes.SCT.LumbarSpine,  # 122496007
    SpineRegion.SPINE: codes.SCT.Spine,  # 421060004
}

# Body Part Examined defined terms (PS3.16 Annex L). A lateral chest film shows the
# thoracic spine; the lumbosacral junction is read with the lumbar spine.
_BODY_PARTS = {
    "CSPINE": SpineRegion.CERVICAL,
    "TSPINE": SpineRegion.THORACIC,
    "CHEST": SpineRegion.THORACIC,
    "LSPINE": SpineRegion.LUMBAR,
    "LSSPINE": SpineRegion.LUMBAR,
}

# Anatomic Region Sequence codes (SCT), read when Body Part Examined says nothing.
_ANATOMIC_REGIONS = {
    "122494005": SpineRegion.CERVICAL,
    "122495006": SpineRegion.THORACIC,
    "43799004": SpineRegion.THORACIC,  # Thorax
    "51185008": SpineRegion.THORACIC,  # Chest
    "122496007": SpineRegion.LUMBAR,
}


def region_of_film(source: Dataset) -> SpineRegion:
    """The region from Body Part Examined (CSPINE, TSPINE, LSPINE, LSSPINE, CHEST), else from
    the first Anatomic Region Sequence item's SNOMED CT code, else SPINE."""
    body_part = str(source.get("BodyPartExamined") or "").strip().upper()
    if body_part in _BODY_PARTS:
        return _BODY_PARTS[body_part]
    for item in source.get("AnatomicRegionSequence") or ():
        if item.get("CodingSchemeDesignator") in ("SCT", "SRT"):
            return _ANATOMIC_REGIONS.get(str(item.get("CodeValue")), SpineRegion.SPINE)
        break
    return SpineRegion.SPINE


def resolve_region(source: Dataset, region: SpineRegion | str | None) -> SpineRegion:
    """``region`` when given (a :class:`SpineRegion` or its value), else
    :func:`region_of_film`."""
    if region is None:
        return region_of_film(source)
    try:
        return SpineRegion(region)
    except ValueError:
        known = ", ".join(r.value for r in SpineRegion)
        raise ValueError(f"unknown spine region {region!r}; expected one of {known}") from None


SPINE_COLOUR_RGB = (255, 150, 0)
"""How the spine region is drawn: the SEG's recommended display colour and the overlay's."""
