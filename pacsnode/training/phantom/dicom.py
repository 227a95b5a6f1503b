"""Write a rendered phantom as a DICOM DX For Presentation image.

The stored values are chosen so that the written VOI window maps them back onto the
rendered display image exactly, whatever the photometric interpretation.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

__all__ = ["COMPRESSED_SYNTAXES", "Acquisition", "build_dataset", "patient_orientation"]

COMPRESSED_SYNTAXES = (RLELossless, JPEGLSLossless, JPEG2000Lossless)

_REGION_CODES = {
    # region: (BodyPartExamined, SNOMED CT code, meaning, study description)
    "cervical": ("CSPINE", "122494005", "Cervical spine", "XR CERVICAL SPINE LATERAL"),
    "lumbar": ("LSPINE", "122496007", "Lumbar spine", "XR LUMBAR SPINE LATERAL"),
    "chest": ("CHEST", "43799004", "Thorax", "XR CHEST LATERAL"),
}


def body_part_examined(region: str) -> str:
    """The Body Part Examined a phantom film of ``region`` carries."""
    return _REGION_CODES[region][0]


@dataclass(frozen=True)
class Acquisition:
    """How the phantom film was acquired and encoded (drawn once per case)."""

    detector_spacing_mm: float
    magnification: float
    write_magnification: bool
    write_calibrated_spacing: bool
    bits_stored: int
    monochrome1: bool
    transfer_syntax: UID
    window_low_frac: float
    window_high_frac: float
    study_date: dt.date
    patient_sex: str
    patient_age_years: int

    @property
    def patient_spacing_mm(self) -> float:
        return self.detector_spacing_mm / self.magnification


def patient_orientation(facing: str, rotation_deg: float) -> list[str]:
    """PatientOrientation for a lateral film: directions of the image rows and columns.

    The phantom's patient faces +x before rotation (anterior "A" to the right) when
    ``facing`` is "right"; the head is up (feet "F" down the columns).
    """
    a = np.deg2rad(rotation_deg)
    c, s = np.cos(a), np.sin(a)
    # Image axes expressed in the patient's (anterior, foot) frame.
    sign = 1.0 if facing == "right" else -1.0
    row_dir = (sign * c, -s)  # +x of the image
    col_dir = (sign * s, c)  # +y of the image
    return [_letters(row_dir), _letters(col_dir)]


def _letters(vec: tuple[float, float]) -> str:
    ant, foot = vec
    parts = []
    for value, pos, neg in sorted(((ant, "A", "P"), (foot, "F", "H")), key=lambda t: -abs(t[0])):
        if abs(value) > 0.38:
            parts.append(pos if value > 0 else neg)
    return "".join(parts)


def _uid(*parts: object) -> UID:
    # A 2.25 UUID UID derived from the parts, so the same case always has the same UIDs.
    # (generate_uid(prefix=None, entropy_srcs=...) ignores the entropy and is random.)
    name = "|".join(["pacsnode-phantom", *map(str, parts)])
    return UID(f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}")


def build_dataset(
    display: NDArray[np.float32],
    *,
    case_id: str,
    seed: int,
    index: int,
    region: str,
    facing: str,
    rotation_deg: float,
    burned_in: bool,
    acq: Acquisition,
) -> Dataset:
    """Build the DX For Presentation dataset of one phantom film (not yet encoded)."""
    top = (1 << acq.bits_stored) - 1
    lo = round(acq.window_low_frac * top)
    hi = round(acq.window_high_frac * top)
    stored = np.rint(lo + display.astype(np.float64) * (hi - lo))
    if acq.monochrome1:
        # Inverted storage: the window must cover the mirrored range.
        stored = top - stored
        lo, hi = top - hi, top - lo
    pixels = np.clip(stored, 0, top).astype(np.uint16)

    body_part, code, meaning, description = _REGION_CODES[region]
    when = dt.datetime.combine(acq.study_date, dt.time(8, 0)) + dt.timedelta(
        minutes=(seed * 7919 + index * 104729) % 600
    )
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = _uid(seed, index, "instance")
    ds.StudyInstanceUID = _uid(seed, index, "study")
    ds.SeriesInstanceUID = _uid(seed, index, "series")
    # Patient
    ds.PatientName = f"PHANTOM^{case_id}"
    ds.PatientID = f"PH-{case_id}"
    birth = acq.study_date.replace(year=acq.study_date.year - acq.patient_age_years)
    ds.PatientBirthDate = birth.strftime("%Y%m%d")
    ds.PatientSex = acq.patient_sex
    ds.PatientAge = f"{acq.patient_age_years:03d}Y"
    # Study
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = when.strftime("%H%M%S")
    ds.AccessionNumber = f"PH{seed % 100000:05d}{index % 100000:05d}"
    ds.ReferringPhysicianName = ""
    ds.StudyID = f"{index % 100000}"
    ds.StudyDescription = description
    # Series and equipment
    ds.Modality = "DX"
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Lateral"
    ds.BodyPartExamined = body_part
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = "pacsnode"
    ds.ManufacturerModelName = "synthetic phantom"
    ds.SoftwareVersions = "1"
    # Image
    ds.InstanceNumber = 1
    ds.PatientOrientation = patient_orientation(facing, rotation_deg)
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.BurnedInAnnotation = "YES" if burned_in else "NO"
    ds.LossyImageCompression = "00"
    ds.ImageLaterality = "U"
    ds.ViewPosition = "RL" if facing == "right" else "LL"
    view = codes.SCT.RightLateral if facing == "right" else codes.SCT.LeftLateral
    ds.ViewCodeSequence = Sequence([_code(view.value, view.scheme_designator, view.meaning)])
    ds.AnatomicRegionSequence = Sequence([_code(code, "SCT", meaning)])
    ds.AcquisitionContextSequence = Sequence()
    ds.PixelIntensityRelationship = "LOG"
    # +1: higher stored values mean more X-ray intensity (true once inverted).
    ds.PixelIntensityRelationshipSign = 1 if acq.monochrome1 else -1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE" if acq.monochrome1 else "IDENTITY"
    ds.WindowCenter = f"{(lo + hi) / 2 + 0.5:.1f}"
    ds.WindowWidth = f"{hi - lo + 1:.1f}"
    ds.WindowCenterWidthExplanation = "PHANTOM"
    # Detector and positioning
    ds.DetectorType = "SCINTILLATOR"
    ds.DetectorConfiguration = "AREA"
    ds.ImagerPixelSpacing = [f"{acq.detector_spacing_mm:.6f}"] * 2
    if acq.write_magnification:
        ds.EstimatedRadiographicMagnificationFactor = f"{acq.magnification:.6f}"
        ds.DistanceSourceToDetector = "1800"
        ds.DistanceSourceToPatient = f"{1800 / acq.magnification:.1f}"
    if acq.write_calibrated_spacing:
        ds.PixelSpacing = [f"{acq.patient_spacing_mm:.6f}"] * 2
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "Phantom geometry"
    ds.KVP = {"cervical": "70", "lumbar": "90", "chest": "110"}[region]
    ds.PositionerType = "NONE"
    # Pixels
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if acq.monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = acq.bits_stored
    ds.HighBit = acq.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = "PACSNODE_010"
    if acq.transfer_syntax in COMPRESSED_SYNTAXES:
        # pydicom would otherwise give the compressed copy a fresh random UID.
        ds.compress(acq.transfer_syntax, pixels, generate_instance_uid=False)
    elif acq.transfer_syntax == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item
