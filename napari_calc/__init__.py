"""napari-calc: breast microcalcification detection, review and export.

>>> import napari_calc
>>> img = napari_calc.read_image("mammogram.dcm")      # doctest: +SKIP
>>> det = napari_calc.detect(img)                       # doctest: +SKIP
>>> det.calcifications.head()                           # doctest: +SKIP
"""

try:
    from importlib.metadata import PackageNotFoundError, version as _version

    __version__ = _version("napari-calc")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0+src"

from .core import Detections, MammoImage, NapariCalcError, detect, read_image

__all__ = ["read_image", "detect", "Detections", "MammoImage", "NapariCalcError", "__version__"]
