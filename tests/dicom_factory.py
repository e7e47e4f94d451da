"""Build DICOM test files with pydicom, in every flavour napari-calc reads.

Reusable by any test::

    from dicom_factory import make_mammo_dicom, make_tomo_dicom
    make_mammo_dicom(tmp_path / "a.dcm", pixels, pixel_spacing=(0.1, 0.1))

All functions write ``path`` and return the written :class:`pydicom.Dataset`.
Pixels are written *as stored*: the factory never inverts or rescales; for a
MONOCHROME1 file of a dense-bright image ``p`` pass ``monochrome1_of(p, bits)``.

Transfer syntaxes (``transfer_syntax=``, a name below or a UID):
``"explicit"`` (default), ``"implicit"``, ``"big_endian"``, ``"deflated"``,
``"rle"``, ``"jpegls_lossless"``, ``"jpegls_near"``, ``"j2k_lossless"``,
``"j2k"`` (lossy), ``"jpeg_lossless"`` and ``"jpeg_lossless_sv1"``
(need imagecodecs), ``"jpeg_baseline"`` (8-bit; needs opencv or imagecodecs),
``"jpeg_extended"`` (12-bit lossy; needs imagecodecs).
Use :func:`can_encode` to skip when an encoder is absent. JPEG 2000 needs
images of at least ~32 x 32 pixels (OpenJPEG's default resolution levels).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

__all__ = [
    "SOP_CLASSES",
    "TRANSFER_SYNTAXES",
    "make_mammo_dicom",
    "make_tomo_dicom",
    "make_series",
    "make_non_image_dicom",
    "monochrome1_of",
    "can_encode",
]

SOP_CLASSES = {
    ("MG", "FOR PRESENTATION"): "1.2.840.10008.5.1.4.1.1.1.2",
    ("MG", "FOR PROCESSING"): "1.2.840.10008.5.1.4.1.1.1.2.1",
    ("DX", "FOR PRESENTATION"): "1.2.840.10008.5.1.4.1.1.1.1",
    ("DX", "FOR PROCESSING"): "1.2.840.10008.5.1.4.1.1.1.1.1",
    ("CR", None): "1.2.840.10008.5.1.4.1.1.1",
    ("OT", None): "1.2.840.10008.5.1.4.1.1.7",  # secondary capture
    "BTO": "1.2.840.10008.5.1.4.1.1.13.1.3",  # breast tomosynthesis
    "SC_MULTIFRAME_GREY16": "1.2.840.10008.5.1.4.1.1.7.3",
    "BASIC_TEXT_SR": "1.2.840.10008.5.1.4.1.1.88.11",
    "COMPREHENSIVE_SR": "1.2.840.10008.5.1.4.1.1.88.33",
    "SEG": "1.2.840.10008.5.1.4.1.1.66.4",
}

TRANSFER_SYNTAXES = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "big_endian": ExplicitVRBigEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
    "rle": RLELossless,
    "jpegls_lossless": JPEGLSLossless,
    "jpegls_near": JPEGLSNearLossless,
    "j2k_lossless": JPEG2000Lossless,
    "j2k": JPEG2000,
    "jpeg_baseline": JPEGBaseline8Bit,
    "jpeg_extended": JPEGExtended12Bit,
    "jpeg_lossless": JPEGLossless,
    "jpeg_lossless_sv1": JPEGLosslessSV1,
}

_VIEW_CODES = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
    "ML": ("399260004", "medio-lateral"),
    "LM": ("399352003", "latero-medial"),
}


def monochrome1_of(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    """Stored values of a MONOCHROME1 file whose display equals ``pixels``."""
    hi = 2**bits_stored - 1
    return (hi - pixels.astype(np.int64)).astype(pixels.dtype)


def _ts_uid(ts) -> UID:
    if ts is None:
        return ExplicitVRLittleEndian
    if isinstance(ts, str) and ts in TRANSFER_SYNTAXES:
        return TRANSFER_SYNTAXES[ts]
    return UID(str(ts))


def can_encode(transfer_syntax) -> bool:
    """True when this machine can write ``transfer_syntax`` in the factory."""
    uid = _ts_uid(transfer_syntax)
    if not uid.is_compressed:
        return True
    if uid in (JPEGLossless, JPEGLosslessSV1, JPEGExtended12Bit):
        try:
            import imagecodecs

            codec = imagecodecs.JPEG8 if uid == JPEGExtended12Bit else imagecodecs.LJPEG
            return bool(codec.available)
        except (ImportError, AttributeError):
            return False
    if uid == JPEGBaseline8Bit:
        try:
            import cv2  # noqa: F401

            return True
        except ImportError:
            return False
    from pydicom.pixels import get_encoder

    try:
        return get_encoder(uid).is_available
    except Exception:
        return False


def _base_dataset(path, sop_class_uid, modality, *, patient_name, patient_id, study_uid, series_uid,
                  frame_of_reference_uid, extra_meta=None) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
    ds = pydicom.dataset.FileDataset(os.fspath(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    today = _dt.date(2024, 5, 17)
    ds.StudyDate = today.strftime("%Y%m%d")
    ds.SeriesDate = ds.StudyDate
    ds.ContentDate = ds.StudyDate
    ds.StudyTime = "101500"
    ds.ContentTime = "101500"
    ds.AccessionNumber = "ACC123"
    ds.ReferringPhysicianName = ""
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = frame_of_reference_uid or generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "napari-calc test factory"
    ds.ManufacturerModelName = "dicom_factory"
    ds.DeviceSerialNumber = "0001"
    ds.SoftwareVersions = "1"
    ds.BurnedInAnnotation = "NO"
    return ds


def _breast_region() -> DicomSequence:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "76752008", "SCT", "Breast"
    return DicomSequence([item])


def _set_pixels(ds: Dataset, pixels: np.ndarray, bits_stored: int | None, photometric: str) -> None:
    arr = np.ascontiguousarray(pixels)
    if arr.dtype.kind not in "ui":
        raise TypeError(f"pixels must be integers, got {arr.dtype}")
    bits_alloc = 8 if arr.dtype.itemsize == 1 else 16 if arr.dtype.itemsize == 2 else 32
    if bits_stored is None:
        bits_stored = bits_alloc
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    if arr.ndim == 3:
        ds.NumberOfFrames = arr.shape[0]
    ds.Rows, ds.Columns = int(arr.shape[-2]), int(arr.shape[-1])
    ds.BitsAllocated = bits_alloc
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    ds.PixelData = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def _encode_ljpeg_frames(arr: np.ndarray, bits_stored: int) -> list[bytes]:
    import imagecodecs

    frames = arr if arr.ndim == 3 else arr[None]
    return [bytes(imagecodecs.ljpeg_encode(np.ascontiguousarray(f), bitspersample=bits_stored)) for f in frames]


def _encode_jpeg_baseline_frames(arr: np.ndarray) -> list[bytes]:
    if arr.dtype != np.uint8:
        raise TypeError("JPEG baseline needs 8-bit pixels")
    frames = arr if arr.ndim == 3 else arr[None]
    out = []
    try:
        import cv2

        for f in frames:
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(f), [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise RuntimeError("cv2 could not encode JPEG")
            out.append(buf.tobytes())
    except ImportError:
        import imagecodecs

        out = [bytes(imagecodecs.jpeg8_encode(np.ascontiguousarray(f), level=95)) for f in frames]
    return out


def _write(ds: Dataset, path, pixels: np.ndarray, ts, *, preamble: bool = True, jls_error=None,
           j2k_cr=None) -> Dataset:
    uid = _ts_uid(ts)
    if uid.is_compressed:
        bits = int(ds.BitsStored)
        if uid in (JPEGLossless, JPEGLosslessSV1, JPEGBaseline8Bit, JPEGExtended12Bit):
            from pydicom.encaps import encapsulate

            if uid == JPEGBaseline8Bit:
                frames = _encode_jpeg_baseline_frames(pixels)
            elif uid == JPEGExtended12Bit:
                import imagecodecs

                fr = pixels if pixels.ndim == 3 else pixels[None]
                frames = [bytes(imagecodecs.jpeg8_encode(np.ascontiguousarray(f), level=95, bitspersample=12))
                          for f in fr]
            else:
                frames = _encode_ljpeg_frames(pixels, bits)
            ds.PixelData = encapsulate(frames)
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
            ds.file_meta.TransferSyntaxUID = uid
            if uid in (JPEGBaseline8Bit, JPEGExtended12Bit):
                ds.LossyImageCompression = "01"
        else:
            kwargs = {}
            if jls_error is not None:
                kwargs["jls_error"] = jls_error
            if j2k_cr is not None:
                kwargs["j2k_cr"] = j2k_cr
            ds.compress(uid, np.ascontiguousarray(pixels), generate_instance_uid=False, **kwargs)
    else:
        ds.file_meta.TransferSyntaxUID = uid
        if uid == ExplicitVRBigEndian:
            arr = np.ascontiguousarray(pixels)
            ds.PixelData = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    if not preamble:
        # a bare dataset: no preamble, no 'DICM', no file meta group
        ds.preamble = None
        little = uid != ExplicitVRBigEndian
        implicit = uid == ImplicitVRLittleEndian
        fm = ds.file_meta
        ds.file_meta = FileMetaDataset()
        pydicom.dcmwrite(os.fspath(path), ds, implicit_vr=implicit, little_endian=little,
                         enforce_file_format=False)
        ds.file_meta = fm
        return ds
    if uid == ExplicitVRBigEndian:
        pydicom.dcmwrite(os.fspath(path), ds, implicit_vr=False, little_endian=False,
                         force_encoding=True)
        return ds
    ds.save_as(os.fspath(path), enforce_file_format=True)
    return ds


def make_mammo_dicom(
    path,
    pixels: np.ndarray,
    *,
    modality: str = "MG",
    photometric: str = "MONOCHROME2",
    transfer_syntax="explicit",
    bits_stored: int | None = None,
    pixel_spacing: Sequence[float] | None = None,
    imager_pixel_spacing: Sequence[float] | None = None,
    magnification: float | None = None,
    nominal_scanned_pixel_spacing: Sequence[float] | None = None,
    presentation_intent: str | None = "FOR PRESENTATION",
    pixel_intensity_relationship: str | None = None,
    pixel_intensity_relationship_sign: int | None = None,
    laterality: str | None = "L",
    view: str | None = "CC",
    view_code_sequence: bool = True,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    patient_name: str = "Test^Patient",
    patient_id: str = "TEST0001",
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    instance_number: int = 1,
    image_position: Sequence[float] | None = None,
    image_orientation: Sequence[float] | None = None,
    slice_thickness: float | None = None,
    spacing_between_slices: float | None = None,
    sop_class_uid: str | None = None,
    with_pixel_data: bool = True,
    preamble: bool = True,
    jls_error: int | None = None,
    j2k_cr: Sequence[float] | None = None,
    extra: dict | None = None,
) -> Dataset:
    """Write a single-frame (or, given 3-D pixels, simple multi-frame) image.

    Parameters
    ----------
    path : path
        Output file (no extension needed).
    pixels : ndarray of int
        Stored values, ``(rows, cols)`` or ``(frames, rows, cols)``.
    modality : {"MG", "DX", "CR", "OT", ...}
        Selects the SOP class together with ``presentation_intent``.
    photometric : {"MONOCHROME2", "MONOCHROME1", "RGB", ...}
        Written as is.
    transfer_syntax : str
        A name of :data:`TRANSFER_SYNTAXES` or a UID.
    bits_stored : int, optional
        Default: the dtype's bits.
    pixel_spacing, imager_pixel_spacing, nominal_scanned_pixel_spacing : pair of float, optional
        (row, col) mm.
    magnification : float, optional
        EstimatedRadiographicMagnificationFactor.
    presentation_intent : str or None
        ``"FOR PRESENTATION"`` / ``"FOR PROCESSING"``; ``None`` omits it.
    pixel_intensity_relationship, pixel_intensity_relationship_sign : optional
        (0028,1040) "LIN"/"LOG"/"DISP" and (0028,1041) +1/-1.
    laterality, view : str or None
        ImageLaterality and ViewPosition (+ ViewCodeSequence if
        ``view_code_sequence``).
    window : (center, width), optional
    rescale : (slope, intercept), optional
    image_position, image_orientation : optional
        ImagePositionPatient / ImageOrientationPatient.
    sop_class_uid : str, optional
        Overrides the SOP class.
    with_pixel_data : bool
        False writes a header without PixelData.
    preamble : bool
        False writes a bare dataset without preamble, ``DICM`` or file meta.
    jls_error, j2k_cr : optional
        Lossy JPEG-LS near-lossless error / JPEG 2000 compression ratios.
    extra : dict, optional
        Further ``keyword: value`` attributes set last.

    Returns
    -------
    pydicom.Dataset
    """
    pixels = np.asarray(pixels)
    intent_key = presentation_intent if modality in ("MG", "DX") else None
    sop = sop_class_uid or SOP_CLASSES.get((modality, intent_key)) or SOP_CLASSES[("OT", None)]
    ds = _base_dataset(path, sop, modality, patient_name=patient_name, patient_id=patient_id,
                       study_uid=study_uid, series_uid=series_uid,
                       frame_of_reference_uid=frame_of_reference_uid)
    ds.InstanceNumber = instance_number
    if presentation_intent is not None:
        ds.PresentationIntentType = presentation_intent
    if laterality is not None:
        ds.ImageLaterality = laterality
    if view is not None:
        ds.ViewPosition = view
        if view_code_sequence and view in _VIEW_CODES:
            item = Dataset()
            item.CodeValue, item.CodeMeaning = _VIEW_CODES[view]
            item.CodingSchemeDesignator = "SCT"
            if modality == "MG":
                item.ViewModifierCodeSequence = DicomSequence([])
            ds.ViewCodeSequence = DicomSequence([item])
    if modality in ("MG", "DX"):
        # DX / MG Image module essentials (identity rescale, no VOI applied)
        lossy = _ts_uid(transfer_syntax) in (JPEGBaseline8Bit, JPEGExtended12Bit, JPEG2000, JPEGLSNearLossless)
        ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
        ds.LossyImageCompression = "01" if lossy else "00"
        processing = presentation_intent == "FOR PROCESSING"
        ds.PixelIntensityRelationship = "LIN" if processing else "LOG"
        ds.PixelIntensityRelationshipSign = 1 if (processing or photometric == "MONOCHROME1") else -1
        if rescale is None:
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
        ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
        ds.DetectorType = "DIRECT"
        ds.PatientOrientation = ["A", "R"] if laterality == "L" else ["P", "L"]
        ds.AnatomicRegionSequence = _breast_region() if modality == "MG" else DicomSequence([])
        ds.AcquisitionContextSequence = DicomSequence([])
        if modality == "MG":
            ds.PositionerType = "MAMMOGRAPHIC"
            ds.BodyPartExamined = "BREAST"
            ds.OrganExposed = "BREAST"
        else:
            ds.PositionerType = ""
    if pixel_spacing is not None:
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
    if imager_pixel_spacing is not None:
        ds.ImagerPixelSpacing = [float(v) for v in imager_pixel_spacing]
    if nominal_scanned_pixel_spacing is not None:
        ds.NominalScannedPixelSpacing = [float(v) for v in nominal_scanned_pixel_spacing]
    if magnification is not None:
        ds.EstimatedRadiographicMagnificationFactor = float(magnification)
    if pixel_intensity_relationship is not None:
        ds.PixelIntensityRelationship = pixel_intensity_relationship
    if pixel_intensity_relationship_sign is not None:
        ds.PixelIntensityRelationshipSign = int(pixel_intensity_relationship_sign)
    if window is not None:
        ds.WindowCenter = float(window[0])
        ds.WindowWidth = float(window[1])
    if rescale is not None:
        ds.RescaleSlope = float(rescale[0])
        ds.RescaleIntercept = float(rescale[1])
        ds.RescaleType = "US"
    if image_position is not None:
        ds.ImagePositionPatient = [float(v) for v in image_position]
    if image_orientation is not None:
        ds.ImageOrientationPatient = [float(v) for v in image_orientation]
    if slice_thickness is not None:
        ds.SliceThickness = float(slice_thickness)
    if spacing_between_slices is not None:
        ds.SpacingBetweenSlices = float(spacing_between_slices)
    if with_pixel_data:
        _set_pixels(ds, pixels, bits_stored, photometric)
    else:
        ds.PhotometricInterpretation = photometric
        ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
        ds.SamplesPerPixel = 1
        ds.BitsAllocated = 16
        ds.BitsStored = bits_stored or 16
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    if not with_pixel_data:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(os.fspath(path), enforce_file_format=True)
        return ds
    return _write(ds, path, pixels, transfer_syntax, preamble=preamble, jls_error=jls_error,
                  j2k_cr=list(j2k_cr) if j2k_cr is not None else None)


def make_tomo_dicom(
    path,
    volume: np.ndarray,
    *,
    enhanced: bool = True,
    photometric: str = "MONOCHROME2",
    transfer_syntax="explicit",
    bits_stored: int | None = None,
    pixel_spacing: Sequence[float] | None = (0.1, 0.1),
    imager_pixel_spacing: Sequence[float] | None = None,
    magnification: float | None = None,
    spacing_between_slices: float | None = 1.0,
    slice_thickness: float | None = 1.0,
    positions: Sequence[Sequence[float]] | None = None,
    image_orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    per_frame_pixel_measures: bool = False,
    rescale: tuple[float, float] | Sequence[tuple[float, float]] | None = None,
    window: tuple[float, float] | None = None,
    laterality: str | None = "R",
    view: str | None = "MLO",
    presentation_intent: str = "FOR PRESENTATION",
    patient_name: str = "Tomo^Patient",
    patient_id: str = "TOMO0001",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_class_uid: str | None = None,
    extra: dict | None = None,
) -> Dataset:
    """Write a breast tomosynthesis volume ``(slices, rows, cols)``.

    Parameters
    ----------
    enhanced : bool
        True: Breast Tomosynthesis Image Storage, enhanced multi-frame with
        Shared (PixelMeasures, PlaneOrientation, PixelValueTransformation,
        FrameVOILUT) and Per-frame (PlanePosition, FrameContent) Functional
        Groups. False: a simple multi-frame (Multi-frame Grayscale Word
        Secondary Capture by default) with top-level PixelSpacing,
        SpacingBetweenSlices, SliceThickness.
    pixel_spacing : pair or None
        In-plane spacing (functional group PixelMeasures for enhanced).
    spacing_between_slices, slice_thickness : float or None
        Slice geometry; ``None`` omits.
    positions : list of xyz, optional
        Per-frame ImagePositionPatient (enhanced). Default: along the normal
        of ``image_orientation`` at ``spacing_between_slices`` (or 1 mm).
    per_frame_pixel_measures : bool
        Put PixelMeasuresSequence in each per-frame item instead of shared.
    rescale : (slope, intercept) or list of them per frame, optional
        In PixelValueTransformationSequence (shared, or per frame for a list).
    """
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError("volume must be 3-D")
    n = vol.shape[0]
    sop = sop_class_uid or (SOP_CLASSES["BTO"] if enhanced else SOP_CLASSES["SC_MULTIFRAME_GREY16"])
    if not enhanced and vol.dtype.itemsize == 1 and sop_class_uid is None:
        sop = "1.2.840.10008.5.1.4.1.1.7.2"  # multi-frame grayscale byte SC
    ds = _base_dataset(path, sop, "MG", patient_name=patient_name, patient_id=patient_id,
                       study_uid=study_uid, series_uid=series_uid, frame_of_reference_uid=None)
    ds.PresentationIntentType = presentation_intent
    if laterality is not None:
        ds.ImageLaterality = laterality
    if view is not None:
        ds.ViewPosition = view
    ds.BodyPartExamined = "BREAST"
    if imager_pixel_spacing is not None:
        ds.ImagerPixelSpacing = [float(v) for v in imager_pixel_spacing]
    if magnification is not None:
        ds.EstimatedRadiographicMagnificationFactor = float(magnification)
    normal = np.cross(np.asarray(image_orientation[:3], float), np.asarray(image_orientation[3:], float))
    step = spacing_between_slices or 1.0
    if positions is None:
        positions = [list(map(float, (k * step) * normal)) for k in range(n)]
    if enhanced:
        ds.ContentQualification = "PRODUCT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMOSYNTHESIS", "NONE"]
        ds.PixelPresentation = "MONOCHROME"
        ds.VolumetricProperties = "VOLUME"
        ds.VolumeBasedCalculationTechnique = "TOMOSYNTHESIS"
        ds.AcquisitionContextSequence = DicomSequence([])
        ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
        ds.BurnedInAnnotation = "NO"
        ds.LossyImageCompression = "01" if _ts_uid(transfer_syntax) in (JPEG2000, JPEGLSNearLossless) else "00"
        ds.PositionerType = "MAMMOGRAPHIC"
        ds.BreastImplantPresent = "NO"
        if view in _VIEW_CODES:
            code = Dataset()
            code.CodeValue, code.CodeMeaning = _VIEW_CODES[view]
            code.CodingSchemeDesignator = "SCT"
            code.ViewModifierCodeSequence = DicomSequence([])
            ds.ViewCodeSequence = DicomSequence([code])
        acq_dt = ds.StudyDate + ds.StudyTime
        measures = Dataset()
        if pixel_spacing is not None:
            measures.PixelSpacing = [float(v) for v in pixel_spacing]
        if slice_thickness is not None:
            measures.SliceThickness = float(slice_thickness)
        if spacing_between_slices is not None:
            measures.SpacingBetweenSlices = float(spacing_between_slices)
        shared = Dataset()
        orient = Dataset()
        orient.ImageOrientationPatient = [float(v) for v in image_orientation]
        shared.PlaneOrientationSequence = DicomSequence([orient])
        if not per_frame_pixel_measures:
            shared.PixelMeasuresSequence = DicomSequence([measures])
        per_frame_rescale = rescale is not None and isinstance(rescale[0], (tuple, list))
        if not per_frame_rescale:
            pvt = Dataset()
            slope, intercept = (1.0, 0.0) if rescale is None else (float(rescale[0]), float(rescale[1]))
            pvt.RescaleSlope, pvt.RescaleIntercept = slope, intercept
            pvt.RescaleType = "US"
            shared.PixelValueTransformationSequence = DicomSequence([pvt])
        anatomy = Dataset()
        anatomy.AnatomicRegionSequence = _breast_region()
        anatomy.FrameLaterality = laterality or "U"
        shared.FrameAnatomySequence = DicomSequence([anatomy])
        ftype = Dataset()
        ftype.FrameType = ["ORIGINAL", "PRIMARY", "TOMOSYNTHESIS", "NONE"]
        ftype.PixelPresentation = "MONOCHROME"
        ftype.VolumetricProperties = "VOLUME"
        ftype.VolumeBasedCalculationTechnique = "TOMOSYNTHESIS"

        if window is not None:
            voi = Dataset()
            voi.WindowCenter, voi.WindowWidth = float(window[0]), float(window[1])
            shared.FrameVOILUTSequence = DicomSequence([voi])
        ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
        frames = []
        for k in range(n):
            item = Dataset()
            pos = Dataset()
            pos.ImagePositionPatient = [float(v) for v in positions[k]]
            item.PlanePositionSequence = DicomSequence([pos])
            content = Dataset()
            content.StackID = "1"
            content.InStackPositionNumber = k + 1
            content.FrameAcquisitionNumber = 1
            content.FrameAcquisitionDateTime = acq_dt
            content.FrameReferenceDateTime = acq_dt
            content.FrameAcquisitionDuration = 0.0
            item.FrameContentSequence = DicomSequence([content])
            item.XRay3DFrameTypeSequence = DicomSequence([ftype])
            if per_frame_pixel_measures:
                m = Dataset()
                for kw in ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices"):
                    if kw in measures:
                        setattr(m, kw, measures[kw].value)
                item.PixelMeasuresSequence = DicomSequence([m])
            if per_frame_rescale:
                pvt = Dataset()
                pvt.RescaleSlope, pvt.RescaleIntercept = float(rescale[k][0]), float(rescale[k][1])
                pvt.RescaleType = "US"
                item.PixelValueTransformationSequence = DicomSequence([pvt])
            frames.append(item)
        ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
        ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
    else:
        if pixel_spacing is not None:
            ds.PixelSpacing = [float(v) for v in pixel_spacing]
        if slice_thickness is not None:
            ds.SliceThickness = float(slice_thickness)
        if spacing_between_slices is not None:
            ds.SpacingBetweenSlices = float(spacing_between_slices)
        ds.ImageOrientationPatient = [float(v) for v in image_orientation]
        ds.ImagePositionPatient = [float(v) for v in positions[0]]
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = float(rescale[0]), float(rescale[1])
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = float(window[0]), float(window[1])
    _set_pixels(ds, vol, bits_stored, photometric)
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    return _write(ds, path, vol, transfer_syntax)


def make_series(
    folder,
    volume: np.ndarray,
    *,
    pixel_spacing: Sequence[float] | None = (0.1, 0.1),
    slice_spacing: float = 1.0,
    shuffle_seed: int | None = 0,
    with_positions: bool = True,
    modality: str = "OT",
    series_uid: str | None = None,
    prefix: str = "IM",
    extension: str = "",
    **kwargs,
) -> list[str]:
    """Write a volume as one single-frame file per slice into ``folder``.

    Instance numbers are written in slice order but the *file names* are
    shuffled (``shuffle_seed``) so that readers must sort by header.
    Returns the file paths (in slice order).
    """
    os.makedirs(folder, exist_ok=True)
    vol = np.asarray(volume)
    n = vol.shape[0]
    series_uid = series_uid or generate_uid()
    study_uid = kwargs.pop("study_uid", None) or generate_uid()
    for_uid = kwargs.pop("frame_of_reference_uid", None) or generate_uid()
    intent = kwargs.pop("presentation_intent", "FOR PRESENTATION" if modality in ("MG", "DX") else None)
    names = list(range(n))
    if shuffle_seed is not None:
        np.random.default_rng(shuffle_seed).shuffle(names)
    paths = []
    for k in range(n):
        p = os.path.join(os.fspath(folder), f"{prefix}{names[k]:04d}{extension}")
        make_mammo_dicom(
            p, vol[k], modality=modality, pixel_spacing=pixel_spacing, series_uid=series_uid,
            study_uid=study_uid, frame_of_reference_uid=for_uid, instance_number=k + 1,
            image_position=[0.0, 0.0, k * slice_spacing] if with_positions else None,
            image_orientation=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0] if with_positions else None,
            presentation_intent=intent,
            **kwargs,
        )
        paths.append(p)
    return paths


def make_non_image_dicom(path, kind: str = "SR", *, with_pixels: bool = False) -> Dataset:
    """Write a non-image object: ``"SR"`` (Basic Text SR) or ``"SEG"``.

    ``with_pixels=True`` gives the SEG a (binary) PixelData, so that a reader
    must refuse it by SOP class / modality, not by missing pixels.
    """
    kind = kind.upper()
    if kind == "SR":
        ds = _base_dataset(path, SOP_CLASSES["BASIC_TEXT_SR"], "SR", patient_name="Sr^Patient",
                           patient_id="SR1", study_uid=None, series_uid=None, frame_of_reference_uid=None)
        ds.ValueType = "CONTAINER"
        ds.ContinuityOfContent = "SEPARATE"
        ds.CompletionFlag = "COMPLETE"
        ds.VerificationFlag = "UNVERIFIED"
        concept = Dataset()
        concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "126000", "DCM", "Imaging Measurement Report"
        ds.ConceptNameCodeSequence = DicomSequence([concept])
    elif kind == "SEG":
        ds = _base_dataset(path, SOP_CLASSES["SEG"], "SEG", patient_name="Seg^Patient",
                           patient_id="SEG1", study_uid=None, series_uid=None, frame_of_reference_uid=None)
        ds.SegmentationType = "BINARY"
        if with_pixels:
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = ds.Columns = 8
            ds.NumberOfFrames = 1
            ds.BitsAllocated = ds.BitsStored = 1
            ds.HighBit = 0
            ds.PixelRepresentation = 0
            ds.PixelData = b"\x0f" * 8
    else:
        raise ValueError(kind)
    ds.save_as(os.fspath(path), enforce_file_format=True)
    return ds
