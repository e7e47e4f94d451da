"""The science of napari-calc: read -> detect -> cluster -> export.

Imports without napari or Qt (a test guards this).

- :mod:`.read` reads DICOM and TIFF into a :class:`MammoImage`;
- :mod:`.detect` finds calcifications with the C kernel;
- :mod:`.cluster` groups them (BI-RADS "grouped");
- :mod:`.export` writes CSV, JSON, 3D Slicer markups and DICOM SR;
- :mod:`.phantom` makes synthetic mammograms with ground truth;
- :mod:`.evaluate` measures detection (FROC).
"""

from .detect import detect, DetectionParams, PRESETS
from .detections import Detections
from .errors import NapariCalcError
from .image import MammoImage


def read_image(path, **kwargs) -> MammoImage:
    """Read a mammogram or tomosynthesis stack (DICOM, TIFF, OME-TIFF).

    See :func:`napari_calc.core.read.read_image`.
    """
    from .read import read_image as _read

    return _read(path, **kwargs)


__all__ = ["read_image", "detect", "Detections", "DetectionParams", "MammoImage",
           "NapariCalcError", "PRESETS"]
