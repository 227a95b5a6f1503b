"""Who made a result object: the node as equipment and device observer, and the algorithm
(model) whose output it carries. Both are written into every SEG and SR.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import highdicom as hd
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import UID

import pacsnode
from pacsnode.export.uids import name_based_uid

__all__ = ["AlgorithmInfo", "NodeIdentity"]


@dataclass(frozen=True)
class AlgorithmInfo:
    """The model that produced a result.

    Attributes
    ----------
    name
        Algorithm name, e.g. ``"pacsnode spine localiser"``.
    version
        The model version from its manifest; it also keys the result UIDs
        (:func:`pacsnode.export.uids.export_uids`), so it must change when the weights do.
    family
        Algorithm family from CID 7162, by default Artificial Intelligence.
    """

    name: str
    version: str
    family: Code = field(default_factory=lambda: codes.cid7162.ArtificialIntelligence)

    def __post_init__(self) -> None:
        if not self.name.strip() or not self.version.strip():
            raise ValueError("an algorithm needs a non-empty name and version")

    def seg_identification(self) -> hd.AlgorithmIdentificationSequence:
        """The Segmentation Algorithm Identification Sequence of a SEG segment."""
        return hd.AlgorithmIdentificationSequence(
            name=self.name, family=self.family, version=self.version, source=NodeIdentity.MAKER
        )

    def sr_identification(self) -> hd.sr.AlgorithmIdentification:
        """TID 4019 Algorithm Identification for an SR measurement group."""
        return hd.sr.AlgorithmIdentification(
            name=self.name,
            version=self.version,
            family=self.family,
            manufacturer=NodeIdentity.MAKER,
        )


@dataclass(frozen=True)
class NodeIdentity:
    """The node as the equipment that creates result objects and the device that observed.

    Attributes
    ----------
    name
        Device Observer Name in SRs (TID 1004).
    serial_number
        Device Serial Number: the node's AE title unless the site gives another; it tells
        installations apart and keys :attr:`uid`.
    model_name
        Manufacturer's Model Name.
    """

    name: str = "pacsnode"
    serial_number: str = "PACSNODE"
    model_name: str = "pacsnode"

    MAKER = "pacsnode"
    """Manufacturer of the software, and of the algorithms it ships."""

    @property
    def manufacturer(self) -> str:
        return self.MAKER

    @property
    def software_versions(self) -> str:
        return pacsnode.__version__

    @property
    def equipment(self) -> dict[str, str]:
        """The General Equipment attributes every object the node builds carries, as
        highdicom's builders take them."""
        return {
            "manufacturer": self.manufacturer,
            "manufacturer_model_name": self.model_name,
            "software_versions": self.software_versions,
            "device_serial_number": self.serial_number,
        }

    @property
    def uid(self) -> UID:
        """Device Observer UID: the same for the same name and serial number."""
        return name_based_uid("device", self.name.replace("|", "/"), self.serial_number)
