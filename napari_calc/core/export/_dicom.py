"""DICOM helpers shared by the two SR writers and the SR reader.

Source reference
----------------
An SR must reference the image its findings lie on. For a DICOM source the
metadata's ``study_instance_uid``, ``series_instance_uid``,
``sop_instance_uid`` and ``sop_class_uid`` are used as they are (after
de-identification, remapped). For a non-DICOM source (TIFF, OME-TIFF, a
bare array) there is no such identity, so one is synthesised
deterministically: ``pydicom.uid.generate_uid(entropy_srcs=["napari-calc
source", <what>, <source path or stem>])`` - exporting the same file twice
yields the same referenced UIDs, so SRs of one file agree. The SOP class of
a synthesised reference is Secondary Capture Image Storage (2-D) or
Multi-frame Grayscale Word Secondary Capture (3-D), the honest class for an
image that did not come from a DICOM modality.

3-D stacks are referenced as one multi-frame instance with frame number
``slice + 1``, unless the metadata holds ``sop_instance_uids`` (one per
slice, a folder of single-frame slices), in which case slice ``k`` refers
to ``sop_instance_uids[k]``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

#: Private coding scheme for concepts DICOM has no code for (PS3.16 8.2: "99" prefix).
PRIVATE_SCHEME = "99NAPCALC"

#: Specific Character Set of an SR with text beyond ASCII (a patient
#: "Müller", an annotator "José"): UTF-8. pydicom has decoded the source's
#: text whatever its character set. All-ASCII SRs declare none (the default
#: repertoire), which every reader handles.
SR_CHARACTER_SET = "ISO_IR 192"

_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})

SC_2D = "1.2.840.10008.5.1.4.1.1.7"          # Secondary Capture Image Storage
SC_3D = "1.2.840.10008.5.1.4.1.1.7.3"        # Multi-frame Grayscale Word SC
MULTIFRAME_CLASSES = {
    SC_3D,
    "1.2.840.10008.5.1.4.1.1.13.1.3",  # Breast Tomosynthesis Image Storage
    "1.2.840.10008.5.1.4.1.1.13.1.4",  # Breast Projection X-Ray (presentation)
    "1.2.840.10008.5.1.4.1.1.13.1.5",  # Breast Projection X-Ray (processing)
}

_PATIENT_MAP = (  # metadata key -> DICOM keyword
    ("patient_name", "PatientName"), ("patient_id", "PatientID"),
    ("patient_birth_date", "PatientBirthDate"), ("patient_sex", "PatientSex"),
    ("study_date", "StudyDate"), ("study_time", "StudyTime"),
    ("accession_number", "AccessionNumber"), ("study_id", "StudyID"),
    ("referring_physician_name", "ReferringPhysicianName"),
)


@dataclass
class SourceRef:
    """Identity of the image the findings refer to."""

    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    frame_of_reference_uid: str | None
    slice_instance_uids: list[str] = field(default_factory=list)
    synthesised: bool = False
    multiframe: bool = False
    #: SELECTED FROM image items already built, shared by SCOORDs on one image
    item_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def instance_for_slice(self, s: int | None) -> tuple[str, list[int] | None]:
        """(SOP instance UID, frame numbers or None) of slice ``s``."""
        if s is None:
            return self.sop_instance_uid, None
        if self.slice_instance_uids:
            return self.slice_instance_uids[int(s)], None
        return self.sop_instance_uid, [int(s) + 1]


def _synth(what: str, key: str) -> str:
    return str(generate_uid(entropy_srcs=["napari-calc source", what, key]))


def source_reference(metadata: dict, ndim: int, fallback_key: str) -> SourceRef:
    """The :class:`SourceRef` for ``metadata`` (see the module docstring)."""
    key = str(metadata.get("source_path") or fallback_key)
    sop = metadata.get("sop_instance_uid")
    synthesised = not sop
    study = metadata.get("study_instance_uid") or _synth("study", key)
    series = metadata.get("series_instance_uid") or _synth("series", key)
    sop = sop or _synth("instance", key)
    cls = metadata.get("sop_class_uid") or (SC_3D if ndim == 3 else SC_2D)
    slice_uids = [str(u) for u in (metadata.get("sop_instance_uids") or [])] if ndim == 3 else []
    return SourceRef(
        study_uid=str(study), series_uid=str(series), sop_class_uid=str(cls),
        sop_instance_uid=str(sop),
        frame_of_reference_uid=(str(metadata["frame_of_reference_uid"])
                                if metadata.get("frame_of_reference_uid") else None),
        slice_instance_uids=slice_uids, synthesised=synthesised,
        multiframe=(ndim == 3 and not slice_uids),
    )


def source_datasets(ref: SourceRef, metadata: dict, deidentified: bool) -> list[Dataset]:
    """Minimal datasets describing the referenced image(s) (for SR evidence)."""
    uids = ref.slice_instance_uids or [ref.sop_instance_uid]
    out = []
    for uid in uids:
        ds = Dataset()
        for mkey, kw in _PATIENT_MAP:
            v = None if deidentified else metadata.get(mkey)
            setattr(ds, kw, "" if v is None else str(v))
        ds.StudyInstanceUID = ref.study_uid
        ds.SeriesInstanceUID = ref.series_uid
        ds.SOPClassUID = ref.sop_class_uid
        ds.SOPInstanceUID = uid
        ds.Modality = str(metadata.get("modality") or "OT")
        if ref.frame_of_reference_uid:
            ds.FrameOfReferenceUID = ref.frame_of_reference_uid
        out.append(ds)
    return out


def apply_deidentification(ds: Dataset) -> None:
    """Mark an SR de-identified and blank its dates/times (PS3.15 'D'/'Z')."""
    ds.PatientIdentityRemoved = "YES"
    from .deidentify import DEID_METHOD

    ds.DeidentificationMethod = DEID_METHOD[:64]
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
               "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID"):
        if kw in ds:
            setattr(ds, kw, "")
    for kw in ("SeriesDate", "SeriesTime", "InstanceCreationDate", "InstanceCreationTime",
               "AcquisitionDateTime", "ObservationDateTime"):
        if kw in ds:
            delattr(ds, kw)
    # Type 1 content date/time: a fixed dummy value, as the profile's "D" action
    ds.ContentDate = "19000101"
    ds.ContentTime = "000000"
    _scrub_datetimes(ds)


def _scrub_datetimes(ds: Dataset) -> None:
    """Replace DA/DT/TM values anywhere in the tree by dummies (keeps Type 1)."""
    for elem in ds.iterall():
        if elem.VR == "DT" and elem.value:
            elem.value = "19000101000000"
        elif elem.VR == "DA" and elem.value and elem.keyword not in ("ContentDate",):
            elem.value = "19000101"
        elif elem.VR == "TM" and elem.value and elem.keyword not in ("ContentTime",):
            elem.value = "000000"


def coding_scheme_identification() -> Dataset:
    """An item of (0008,0110) describing :data:`PRIVATE_SCHEME`."""
    it = Dataset()
    it.CodingSchemeDesignator = PRIVATE_SCHEME
    it.CodingSchemeName = "napari-calc private concepts"
    it.CodingSchemeResponsibleOrganization = "napari-calc"
    return it


def now_da_tm() -> tuple[str, str]:
    n = _dt.datetime.now()
    return n.strftime("%Y%m%d"), n.strftime("%H%M%S")


def content_digest(*parts) -> str:
    """SHA-256 over text parts: identical content gives identical document UIDs."""
    import hashlib

    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def document_uids(flavour: str, digest: str) -> tuple[str, str]:
    """(series UID, SOP instance UID) of an SR, derived from its content.

    The same detections, metadata and parameters give the same UIDs (and,
    with :func:`stamp_times`, byte-identical files); any change gives new
    ones, as DICOM requires of a changed document.
    """
    series = str(generate_uid(entropy_srcs=["napari-calc sr series", flavour, digest]))
    sop = str(generate_uid(entropy_srcs=["napari-calc sr instance", flavour, digest]))
    return series, sop


def stamp_times(ds: Dataset) -> None:
    """Set the SR's creation dates/times from ``$SOURCE_DATE_EPOCH`` when set.

    Follows the reproducible-builds convention: with the variable set, the
    file does not depend on when it was written. Without it, the current
    local time (as highdicom set it) is kept.
    """
    import os

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return
    try:
        t = _dt.datetime.fromtimestamp(int(epoch), tz=_dt.timezone.utc)
    except (ValueError, OverflowError, OSError):
        return
    da, tm = t.strftime("%Y%m%d"), t.strftime("%H%M%S")
    for d_kw, t_kw in (("ContentDate", "ContentTime"), ("InstanceCreationDate", "InstanceCreationTime"),
                       ("SeriesDate", "SeriesTime")):
        if d_kw in ds:
            setattr(ds, d_kw, da)
        if t_kw in ds:
            setattr(ds, t_kw, tm)
    for it in ds.get("ContributingEquipmentSequence") or []:
        if "ContributionDateTime" in it:
            it.ContributionDateTime = da + tm


def _has_non_ascii_text(ds: Dataset) -> bool:
    stack = [ds]
    while stack:
        d = stack.pop()
        for elem in d.elements():
            if elem.VR == "SQ":
                stack.extend(elem.value)
            elif elem.VR in _TEXT_VRS and elem.value is not None:
                vals = elem.value if elem.VM > 1 else [elem.value]
                if any(not str(v).isascii() for v in vals):
                    return True
    return False


def save_dataset(ds: Dataset, fileobj) -> None:
    """``ds.save_as(fileobj)``, without pydicom's per-item VR re-checks.

    pydicom re-runs its ambiguous-VR correction on every nested item of a
    dataset built in memory, walking each subtree again (seconds for an SR
    with thousands of content items). The correction is run once on the
    whole tree here, and the items are then marked as already in the output
    encoding (explicit VR little endian); the bytes written are the same.
    """
    from pydicom.filewriter import correct_ambiguous_vr

    correct_ambiguous_vr(ds, True)
    if "SpecificCharacterSet" not in ds and _has_non_ascii_text(ds):
        ds.SpecificCharacterSet = SR_CHARACTER_SET  # written as declared (was Latin-1, undeclared)
    stack = [ds]
    while stack:
        d = stack.pop()
        d.set_original_encoding(False, True, d._character_set)
        for elem in d.elements():
            if elem.VR == "SQ":
                stack.extend(elem.value)
    ds.save_as(fileobj, enforce_file_format=True)
