"""Plain-pydicom SR content items (PS3.3 C.17.3), for large documents.

highdicom's content item classes validate every item against the standard
(tens of milliseconds per measurement group on a busy machine), which makes
an SR of a few thousand candidates take minutes. The per-calcification items are therefore
built here as plain pydicom Datasets with exactly the structure highdicom
produces (``tests/test_export_sr.py`` compares the two item by item);
highdicom still builds the document, its modules and the report skeleton.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.valuerep import DS

__all__ = ["code", "item", "num", "text", "uidref", "code_item", "container", "scoord",
           "image", "children"]


def code(value: str, scheme: str, meaning: str) -> Dataset:
    """A Code Sequence item (Basic Coded Entry Attributes)."""
    d = Dataset()
    if len(value) > 16:
        d.LongCodeValue = value
    else:
        d.CodeValue = value
    d.CodingSchemeDesignator = scheme
    d.CodeMeaning = meaning
    return d


def _copy_code(c) -> Dataset:
    """``c`` itself when it is one of ours (shared: codes are never modified
    and Sequences do not own their items), else a plain copy."""
    if type(c) is Dataset:
        return c
    value = c.get("CodeValue") or c.get("LongCodeValue") or c.get("URNCodeValue")
    return code(str(value), str(c.CodingSchemeDesignator), str(c.CodeMeaning))


def item(relationship: str | None, value_type: str, name=None) -> Dataset:
    """A content item header: relationship, value type, concept name."""
    d = Dataset()
    if relationship:
        d.RelationshipType = relationship
    d.ValueType = value_type
    if name is not None:
        d.ConceptNameCodeSequence = Sequence([_copy_code(name)])
    return d


def children(d: Dataset, kids) -> Dataset:
    """Set ``d``'s Content Sequence (when there are children)."""
    kids = list(kids)
    if kids:
        d.ContentSequence = Sequence(kids)
    return d


def num(relationship: str, name, value, unit) -> Dataset:
    """NUM item; floats also get a 64-bit FloatingPointValue (as highdicom writes)."""
    d = item(relationship, "NUM", name)
    mv = Dataset()
    mv.NumericValue = DS(value, auto_format=True)
    if isinstance(value, float):
        mv.FloatingPointValue = value
    mv.MeasurementUnitsCodeSequence = Sequence([_copy_code(unit)])
    d.MeasuredValueSequence = Sequence([mv])
    return d


def text(relationship: str, name, value: str) -> Dataset:
    d = item(relationship, "TEXT", name)
    d.TextValue = value
    return d


def uidref(relationship: str, name, value: str) -> Dataset:
    d = item(relationship, "UIDREF", name)
    d.UID = value
    return d


def code_item(relationship: str, name, value) -> Dataset:
    d = item(relationship, "CODE", name)
    d.ConceptCodeSequence = Sequence([_copy_code(value)])
    return d


def container(relationship: str | None, name, template_id: str | None = None,
              continuous: bool = True) -> Dataset:
    d = item(relationship, "CONTAINER", name)
    d.ContinuityOfContent = "CONTINUOUS" if continuous else "SEPARATE"
    if template_id is not None:
        t = Dataset()
        t.MappingResource = "DCMR"
        t.TemplateIdentifier = str(template_id)
        d.ContentTemplateSequence = Sequence([t])
    return d


def image(relationship: str, sop_class: str, sop_instance: str, frames=None,
          name=None) -> Dataset:
    """IMAGE item (concept name optional, e.g. for SELECTED FROM / image library)."""
    d = item(relationship, "IMAGE", name)
    rs = Dataset()
    rs.ReferencedSOPClassUID = sop_class
    rs.ReferencedSOPInstanceUID = sop_instance
    if frames:
        rs.ReferencedFrameNumber = list(frames) if len(frames) > 1 else frames[0]
    d.ReferencedSOPSequence = Sequence([rs])
    return d


def scoord(relationship: str, name, graphic_type: str, data, source: Dataset) -> Dataset:
    """SCOORD item with its SELECTED FROM image child. ``data``: flat (col, row) pairs."""
    d = item(relationship, "SCOORD", name)
    d.GraphicType = graphic_type
    d.GraphicData = [float(v) for v in data]
    d.ContentSequence = Sequence([source])
    return d
