"""Export: the result objects the node sends back to the PACS (SEG, SR, GSPS, and a
burned-in Secondary Capture on request) and a PNG overlay for people, built from the
analysis of one film.

The builders import neither torch nor the analysis stack; they take its results as given.
"""

from pacsnode.export.capture import SC_SERIES_NUMBER, build_spine_capture
from pacsnode.export.gsps import GSPS_SERIES_NUMBER, build_spine_gsps
from pacsnode.export.identity import AlgorithmInfo, NodeIdentity
from pacsnode.export.overlay import render_overlay, render_overlay_png
from pacsnode.export.regions import SpineRegion, region_of_film
from pacsnode.export.seg import SEG_SERIES_NUMBER, build_spine_seg
from pacsnode.export.sr import SR_SERIES_NUMBER, build_spine_sr
from pacsnode.export.uids import ExportKind, ExportUIDs, export_uids

__all__ = [
    "GSPS_SERIES_NUMBER",
    "SC_SERIES_NUMBER",
    "SEG_SERIES_NUMBER",
    "SR_SERIES_NUMBER",
    "AlgorithmInfo",
    "ExportKind",
    "ExportUIDs",
    "NodeIdentity",
    "SpineRegion",
    "build_spine_capture",
    "build_spine_gsps",
    "build_spine_seg",
    "build_spine_sr",
    "export_uids",
    "region_of_film",
    "render_overlay",
    "render_overlay_png",
]
