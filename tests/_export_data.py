"""Synthetic Detections and source metadata shared by the export tests.

Built directly (no detector): positions have awkward sub-pixel values so that
a lossy float format would be caught.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from napari_calc.core.columns import calc_columns, cluster_columns
from napari_calc.core.detections import Detections

PATIENT = {
    "patient_name": "Doe^Janet^Q",
    "patient_id": "PID-8675309",
    "patient_birth_date": "19580214",
    "patient_sex": "F",
    "study_date": "20240311",
    "study_time": "101502",
    "accession_number": "ACC77331",
    "study_id": "STY4242",
    "referring_physician_name": "House^Gregory",
}


def dicom_metadata(tmp_path=None, ndim=2, with_geometry=True):
    """Metadata dict of a DICOM mammogram (or tomo stack) source."""
    src = "/data/in/Doe_Janet_mammo.dcm" if tmp_path is None else str(tmp_path / "src.dcm")
    md = {
        "source_path": src,
        "modality": "MG",
        "laterality": "L",
        "view": "CC",
        "presentation_intent": "FOR PRESENTATION",
        "photometric": "MONOCHROME2",
        "manufacturer": "ACME Imaging",
        "study_instance_uid": "1.2.826.0.1.3680043.8.498.1111111111111111",
        "series_instance_uid": "1.2.826.0.1.3680043.8.498.2222222222222222",
        "sop_instance_uid": "1.2.826.0.1.3680043.8.498.3333333333333333",
        "sop_class_uid": ("1.2.840.10008.5.1.4.1.1.1.2" if ndim == 2
                          else "1.2.840.10008.5.1.4.1.1.13.1.3"),
        "frame_of_reference_uid": "1.2.826.0.1.3680043.8.498.4444444444444444",
        **PATIENT,
    }
    if with_geometry:
        md["image_position_patient"] = [-12.5, 30.25, 4.0]
        md["image_orientation_patient"] = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    else:
        md["image_position_patient"] = None
        md["image_orientation_patient"] = None
    return md


def make_detections(ndim=2, metadata=None, spacing=None, extras=False, empty_cluster=False):
    """A Detections with 7 calcifications in 2 clusters (+1 two-member cluster)."""
    rng = np.random.default_rng(42)
    if spacing is None:
        spacing = (0.07, 0.0703125) if ndim == 2 else (1.0, 0.085, 0.085)
    row_mm, col_mm = spacing[-2], spacing[-1]
    rows = np.array([100.123456789, 104.3, 99.87, 110.1, 400.25, 402.75, 700.0]) + rng.random(7) / 3
    cols = np.array([200.2, 205.55, 210.0123, 203.3, 50.5, 58.25, 333.3333]) + rng.random(7) / 3
    cluster = np.array([1, 1, 1, 1, 2, 2, -1])
    n = len(rows)
    df = pd.DataFrame({
        "calc_id": np.arange(1, n + 1),
        "row": rows, "col": cols,
        "y_mm": rows * row_mm, "x_mm": cols * col_mm,
        "diameter_mm": np.array([0.31, 0.25, 0.4, 0.18, 0.5, 0.22, 0.3]),
        "contrast": rng.random(n) * 100 + 1 / 3,
        "cnr": rng.random(n) * 10 + 2 / 7,
        "score": rng.random(n),
        "cluster_id": cluster,
        "status": ["candidate", "accepted", "rejected", "added", "accepted", "candidate", "candidate"],
    })
    if ndim == 3:
        sl = np.array([3, 3, 4, 5, 10, 10, 0])
        df.insert(0, "z_mm", sl * spacing[0])
        df.insert(0, "slice", sl)
    if extras:
        df["morphology"] = ["punctate", "amorphous", "", "linear", "punctate", "fine pleomorphic", ""]
        df["annotator"] = "reader1"
    df = df[calc_columns(ndim) + [c for c in df.columns if c not in calc_columns(ndim)]]
    cl_rows = []
    for cid in (1, 2):
        m = df[df.cluster_id == cid]
        rec = {"cluster_id": cid, "row": m.row.mean(), "col": m.col.mean(),
               "y_mm": m.y_mm.mean(), "x_mm": m.x_mm.mean(), "n_calcifications": len(m),
               "max_extent_mm": 1.2345678 * cid, "area_mm2": 0.987654321 * cid,
               "score": 0.5 + cid / 10}
        if ndim == 3:
            rec = {"slice": int(round(m.slice.mean())), "z_mm": m.z_mm.mean(), **rec}
        cl_rows.append(rec)
    clusters = pd.DataFrame(cl_rows)[cluster_columns(ndim)]
    shape = (1000, 800) if ndim == 2 else (20, 1000, 800)
    if metadata is None:
        metadata = dicom_metadata(ndim=ndim)
    return Detections(
        calcifications=df, clusters=clusters, spacing_mm=tuple(spacing),
        image_shape=shape,
        params={"threshold": 3.5, "min_diameter_mm": 0.1, "sizes": [1, 2, 3]},
        metadata=metadata,
    )


def assert_same_detections(a: Detections, b: Detections, ndim=2, atol=1e-6, check_extras=True):
    """Positions within ``atol`` mm/px; all other columns identical."""
    import numpy.testing as npt

    ca, cb = a.calcifications.reset_index(drop=True), b.calcifications.reset_index(drop=True)
    assert list(cb.columns[: len(calc_columns(ndim))]) == calc_columns(ndim)
    assert len(ca) == len(cb)
    cols = list(ca.columns) if check_extras else calc_columns(ndim)
    for c in cols:
        assert c in cb.columns, c
        if ca[c].dtype.kind in "fiu":
            npt.assert_allclose(cb[c].to_numpy(float), ca[c].to_numpy(float), rtol=0, atol=atol,
                                err_msg=c)
        else:
            assert [("" if pd.isna(v) else str(v)) for v in ca[c]] == \
                   [("" if pd.isna(v) else str(v)) for v in cb[c]], c
    la, lb = a.clusters.reset_index(drop=True), b.clusters.reset_index(drop=True)
    assert list(lb.columns[: len(cluster_columns(ndim))]) == cluster_columns(ndim)
    assert len(la) == len(lb)
    for c in cluster_columns(ndim):
        npt.assert_allclose(lb[c].to_numpy(float), la[c].to_numpy(float), rtol=0, atol=atol,
                            err_msg=c)
