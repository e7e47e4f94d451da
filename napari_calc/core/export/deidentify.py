"""De-identification of exports meant for datasets.

Biopsy-planning exports (the default) keep the source's identifiers so that
the result links back to the right study and image. Dataset exports
(``deidentify=True``) follow the spirit of the DICOM PS3.15 Basic
Application Level Confidentiality Profile for what we write:

* patient attributes (name, ID, birth date, sex, age, ...), dates, times,
  accession number, study ID, referring physician, institution and the
  source file path are removed - only the allowlist
  :data:`~napari_calc.core.export._common.SAFE_METADATA_KEYS` survives;
* every UID (study, series, SOP instance, frame of reference) is replaced
  by ``pydicom.uid.generate_uid(entropy_srcs=[salt, uid])``: the same input
  UID maps to the same output UID within one file, across files and across
  runs with the same salt, so exports of several images of one study still
  share a (new) study UID. SOP Class UIDs are not identifying and are kept.

The salt is the ``salt`` argument, else the environment variable
``NAPARI_CALC_DEID_SALT``, else a fixed project constant. With the constant
the mapping is reproducible by anyone holding the original UID; set a secret
salt to prevent that.
"""

from __future__ import annotations

import os
from typing import Any

from pydicom.uid import generate_uid

from ._common import SAFE_METADATA_KEYS

__all__ = ["remap_uid", "deidentify_metadata", "default_salt", "DEID_METHOD"]

#: Fallback salt (public; see the module docstring).
_DEFAULT_SALT = "napari-calc-deid-v1"

#: Text written to DICOM (0012,0063) De-identification Method.
DEID_METHOD = "napari-calc: patient attributes, dates and paths removed; UIDs remapped (salted hash)"

#: Metadata keys that are UIDs to remap (all others in the allowlist are kept).
UID_KEYS = ("study_instance_uid", "series_instance_uid", "sop_instance_uid",
            "frame_of_reference_uid")


def default_salt() -> str:
    """The salt used when none is given."""
    return os.environ.get("NAPARI_CALC_DEID_SALT") or _DEFAULT_SALT


def remap_uid(uid: str | None, salt: str | None = None) -> str | None:
    """Replace a UID by a new one derived from it and ``salt``.

    Parameters
    ----------
    uid : str or None
        The original UID (``None``/empty stays as is).
    salt : str, optional
        Secret mixed into the hash; :func:`default_salt` when omitted.

    Returns
    -------
    str or None
        A valid UID under pydicom's root, the same for the same inputs.
    """
    if not uid:
        return uid
    salt = default_salt() if salt is None else str(salt)
    return str(generate_uid(entropy_srcs=[salt, str(uid).strip()]))


def deidentify_metadata(metadata: dict[str, Any], salt: str | None = None) -> dict[str, Any]:
    """A de-identified copy of an image metadata dict.

    Only the allowlisted keys survive; UIDs are remapped with
    :func:`remap_uid`. ``deidentified`` is set to True.
    """
    out: dict[str, Any] = {}
    for k in SAFE_METADATA_KEYS:
        if k in metadata and metadata[k] is not None:
            v = metadata[k]
            if k in UID_KEYS:
                v = remap_uid(str(v), salt)
            out[k] = v
    for k, v in metadata.items():  # per-frame UIDs lists, when present
        if k.endswith("_uids") and isinstance(v, (list, tuple)) and k != "sop_class_uids":
            out[k] = [remap_uid(str(u), salt) for u in v]
        elif k == "sop_class_uids":
            out[k] = list(v)
    out["deidentified"] = True
    out["deidentification_method"] = DEID_METHOD
    return out
