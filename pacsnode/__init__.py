"""pacsnode: a DICOM node that reads lateral spine radiographs.

The serving path (reader, and later receiver, queue, analysis and export) never imports
:mod:`pacsnode.training`, which holds the phantom generator and evaluation metrics.
"""

from pacsnode.errors import ImageReadError, PacsnodeError, ReadFailure

__version__ = "0.1.0"

__all__ = ["ImageReadError", "PacsnodeError", "ReadFailure", "__version__"]
