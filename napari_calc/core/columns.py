"""Column names of the public tables (see ``shared/INTERFACE.md``).

These lists are the contract: the DataFrames returned by
:func:`napari_calc.detect` and the CSV files written by the CLI have exactly
these columns, in this order.
"""

CALC_COLUMNS = [
    "calc_id", "row", "col", "y_mm", "x_mm", "diameter_mm",
    "contrast", "cnr", "score", "cluster_id", "status",
]
#: Extra leading columns for 3-D (tomosynthesis) detections.
CALC_COLUMNS_3D_PREFIX = ["slice", "z_mm"]

CLUSTER_COLUMNS = [
    "cluster_id", "row", "col", "y_mm", "x_mm",
    "n_calcifications", "max_extent_mm", "area_mm2", "score",
]
CLUSTER_COLUMNS_3D_PREFIX = ["slice", "z_mm"]

#: Allowed values of the ``status`` column.
STATUSES = ("candidate", "accepted", "rejected", "added")

#: ``cluster_id`` of a calcification that is in no cluster.
NO_CLUSTER = -1


def calc_columns(ndim: int = 2) -> list[str]:
    """Calcification columns for a 2-D or 3-D image."""
    return (CALC_COLUMNS_3D_PREFIX if ndim == 3 else []) + CALC_COLUMNS


def cluster_columns(ndim: int = 2) -> list[str]:
    """Cluster columns for a 2-D or 3-D image."""
    return (CLUSTER_COLUMNS_3D_PREFIX if ndim == 3 else []) + CLUSTER_COLUMNS
