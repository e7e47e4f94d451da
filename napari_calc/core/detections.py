"""The result of a detection run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .columns import calc_columns, cluster_columns

__all__ = ["Detections"]


@dataclass
class Detections:
    """Calcifications and clusters found on one image.

    Attributes
    ----------
    calcifications : pandas.DataFrame
        One row per calcification, columns :data:`~napari_calc.core.columns.CALC_COLUMNS`
        (``slice`` and ``z_mm`` first for 3-D).
    clusters : pandas.DataFrame
        One row per cluster, columns :data:`~napari_calc.core.columns.CLUSTER_COLUMNS`.
    spacing_mm : tuple of float
        Pixel spacing the physical columns were computed with.
    image_shape : tuple of int
        Shape of the image detected on.
    params : dict
        The detection parameters actually used (after defaults).
    metadata : dict
        The source image's metadata (for exports).
    extra : pandas.DataFrame or None
        Further per-calcification features (same row order as
        ``calcifications``), e.g. elongation and area; not part of the
        public CSV contract.
    """

    calcifications: pd.DataFrame
    clusters: pd.DataFrame
    spacing_mm: tuple[float, ...]
    image_shape: tuple[int, ...]
    params: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: pd.DataFrame | None = None

    @property
    def ndim(self) -> int:
        return len(self.image_shape)

    @classmethod
    def empty(cls, image_shape, spacing_mm, params=None, metadata=None) -> "Detections":
        nd = len(image_shape)
        return cls(
            calcifications=pd.DataFrame({c: [] for c in calc_columns(nd)}),
            clusters=pd.DataFrame({c: [] for c in cluster_columns(nd)}),
            spacing_mm=tuple(spacing_mm),
            image_shape=tuple(image_shape),
            params=dict(params or {}),
            metadata=dict(metadata or {}),
        )

    def __repr__(self) -> str:
        return (
            f"Detections({len(self.calcifications)} calcifications, "
            f"{len(self.clusters)} clusters, image {self.image_shape}, "
            f"spacing {self.spacing_mm} mm)"
        )
