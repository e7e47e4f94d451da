"""Plain-JSON conversion shared by the exports and the review sidecar."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["jsonable"]


def jsonable(v: Any) -> Any:
    """Convert numpy / pydicom / path values to plain JSON types (NaN -> None)."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        return [jsonable(x) for x in v.tolist()]
    if isinstance(v, (list, tuple, set)) or type(v).__name__ == "MultiValue":
        return [jsonable(x) for x in v]
    if v is pd.NA or v is pd.NaT:
        return None
    # pydicom PersonName, UID, DSfloat, IS ...
    if type(v).__name__ in ("DSfloat", "DSdecimal"):
        return float(v)
    if type(v).__name__ == "IS":
        return int(v)
    return str(v)
