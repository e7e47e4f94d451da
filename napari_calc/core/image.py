"""The in-memory image every reader returns and every detector accepts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MammoImage"]


@dataclass
class MammoImage:
    """A mammogram (2-D) or tomosynthesis stack (3-D) with its geometry.

    Attributes
    ----------
    pixels : numpy.ndarray
        ``(row, col)`` or ``(slice, row, col)``, in presentation polarity:
        bright means dense. Readers apply the modality LUT, invert
        MONOCHROME1 and transform "for processing" data so that this holds;
        what they did is listed in ``metadata["intensity_transforms"]``. A VOI
        LUT / window is never applied to ``pixels``; it is kept in
        ``metadata["voi_window"]`` for display only.
    spacing_mm : tuple of float or None
        ``(row_mm, col_mm)`` or ``(slice_mm, row_mm, col_mm)``; ``None`` when
        the file does not say (the caller must then supply it).
    metadata : dict
        At least ``source_path``, ``modality``, ``laterality``, ``view``,
        ``presentation_intent``, ``photometric``, ``spacing_source``.
        DICOM adds ``manufacturer``, ``study_instance_uid``,
        ``series_instance_uid``, ``sop_instance_uid``, ``sop_class_uid``,
        ``frame_of_reference_uid``, ``image_position_patient``,
        ``image_orientation_patient``, patient attributes, and
        ``voi_window`` = ``(center, width)`` when present.
    """

    pixels: np.ndarray
    spacing_mm: tuple[float, ...] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return int(self.pixels.ndim)

    @property
    def is_stack(self) -> bool:
        """True for tomosynthesis-like 3-D stacks."""
        return self.pixels.ndim == 3

    @property
    def name(self) -> str:
        """A short display name (file stem when known)."""
        import os

        src = self.metadata.get("source_path")
        if not src:
            return self.metadata.get("name", "image")
        base = os.path.basename(os.path.normpath(str(src)))
        for ext in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".dcm", ".dicom"):
            if base.lower().endswith(ext):
                return base[: -len(ext)]
        return base
