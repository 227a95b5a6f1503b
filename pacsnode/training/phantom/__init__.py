"""Synthetic lateral spine radiographs with exact ground truth, for training and tests.

Rendered by a physical model (line integrals of attenuation through soft tissue and bone,
exponential attenuation, scatter, noise, blur, log processing), written as DICOM DX.
"""

from pacsnode.training.phantom.anatomy import REGIONS, genant_grade
from pacsnode.training.phantom.drr import DrrPhantom, make_drr_phantom
from pacsnode.training.phantom.generate import TRUTH_SCHEMA, Phantom, make_phantom, write_phantom

__all__ = [
    "REGIONS",
    "TRUTH_SCHEMA",
    "DrrPhantom",
    "Phantom",
    "genant_grade",
    "make_drr_phantom",
    "make_phantom",
    "write_phantom",
]
