"""The review worklist of a batch: every image ``napari-calc detect`` finished
in an output folder, in order, with how far its review has got.

An annotator runs ``napari-calc detect scans/ --out results/`` and then
``napari-calc review results/``: the worklist opens each image with its
detections, keeps every review's autosave in ``results/`` (beside the
outputs, so a read-only image folder is no obstacle), and writes each
reviewed image's tables back over its outputs, so that ``results/`` becomes
the labelled dataset (``status`` accepted / rejected / added, the review
labels after the public columns).

Pure Python (no Qt, no napari): :mod:`napari_calc.plugin.worklist_widget`
is the panel that drives it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .batch import MANIFEST_NAME, MARKER_SUFFIX
from .errors import NapariCalcError, counted, printable
from .review import ReviewSession
from .review_sidecar import sidecar_path_for

__all__ = ["WorkItem", "Progress", "Worklist", "read_worklist", "holds_review", "REWRITTEN_FORMATS"]

#: The outputs a worklist rewrites with the review (the others, DICOM SR and
#: Slicer markups, keep the detector's result: save them from napari).
REWRITTEN_FORMATS = ("csv", "clusters.csv", "json")

#: What :attr:`Progress.state` can be.
STATES = ("to review", "in progress", "reviewed", "cannot open")


@dataclass(frozen=True)
class WorkItem:
    """One image of the worklist.

    Attributes
    ----------
    stem : str
        Its output stem, relative to the folder the worklist was read from
        (``run1/a`` for ``results/run1/a.calcifications.csv`` when that
        folder holds several batch folders).
    image : str
        The input image the batch read (from the run's marker).
    detections : pathlib.Path
        The file to open its detections from: the ``.detections.json`` when
        the batch wrote one (it keeps every feature), else the
        ``.calcifications.csv``.
    outputs : dict of str to pathlib.Path
        Every output of the image, keyed by format (``csv``,
        ``clusters.csv``, ``json``, ``mrk.json``, ...).
    n_candidates, n_likely : int
        Candidates found, and those scoring at least the run's
        ``min_score``.
    """

    stem: str
    image: str
    detections: Path
    outputs: dict = field(compare=False)
    n_candidates: int = 0
    n_likely: int = 0

    @property
    def name(self) -> str:
        """The image's file name (what the panel lists)."""
        return os.path.basename(os.path.normpath(self.image)) or self.stem


@dataclass(frozen=True)
class Progress:
    """How far the review of one image has got.

    ``state`` is one of :data:`STATES`: no autosave yet ("to review"),
    candidates shown that still wait for a decision ("in progress"), none
    left ("reviewed"), or the autosave cannot be read ("cannot open",
    ``text`` says why). Counts are of the calcifications the review shows
    (score at its threshold, or accepted / added).
    """

    state: str
    accepted: int = 0
    rejected: int = 0
    added: int = 0
    to_review: int = 0
    text: str = ""


def holds_review(session: ReviewSession) -> bool:
    """True when ``session`` has something to write: an action, or a
    decision carried over from an earlier run's review."""
    return bool(session.history) or bool((session.detections.calcifications["status"] != "candidate").any())


def _natural_key(text: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _marker_item(out_dir: Path, marker: Path) -> WorkItem:
    """The item a done marker describes (raises ValueError / OSError /
    KeyError / TypeError when it is not a usable marker)."""
    doc = json.loads(marker.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != "napari-calc done marker":
        raise ValueError("not a napari-calc done marker")
    image = doc["input"]
    outs = doc["outputs"]
    if not isinstance(image, str) or not isinstance(outs, dict) or "csv" not in outs:
        raise ValueError("the marker names no input or no calcification table")
    rel = marker.relative_to(out_dir).as_posix()
    stem = rel[: -len(MARKER_SUFFIX)]
    outputs = {str(k): marker.parent / str(v) for k, v in outs.items()}  # beside their marker
    missing = [p.name for k, p in outputs.items() if k in REWRITTEN_FORMATS and not p.is_file()]
    if missing:
        raise FileNotFoundError(f"its output {missing[0]} is missing; run napari-calc detect again")
    det = outputs.get("json", outputs["csv"])
    return WorkItem(stem=stem, image=image, detections=det, outputs=outputs,
                    n_candidates=int(doc.get("n_calcifications") or 0),
                    n_likely=int(doc.get("n_likely") or 0))


class Worklist:
    """The images of a batch output folder, in name order (``a2`` before
    ``a10``), with their reviews. Build it with :func:`read_worklist`.

    Attributes
    ----------
    out_dir : pathlib.Path
        The batch folder (absolute). Reviews are autosaved here.
    items : list of WorkItem
    problems : list of str
        One line for each finished-looking output that cannot be used (a
        marker that is not readable, an output that was removed).
    """

    def __init__(self, out_dir, items: list[WorkItem], problems: list[str] | None = None,
                 images_dir=None):
        self.out_dir = Path(os.path.abspath(os.fspath(out_dir)))
        self.items = list(items)
        self.problems = list(problems or [])
        #: Where to look for images that are no longer where the batch read
        #: them (results reviewed on another machine); see :meth:`image_path`.
        self.images_dir = None if images_dir is None else Path(os.path.abspath(os.fspath(images_dir)))

    def image_path(self, item: WorkItem) -> str | None:
        """The image file to open for ``item``: where the batch read it, or,
        when it is not there and :attr:`images_dir` is set, the same file
        under ``images_dir`` (the longest tail of its path found there:
        ``/data/site1/a.dcm`` is looked for as ``data/site1/a.dcm``, then
        ``site1/a.dcm``, then ``a.dcm``). None when it is found nowhere. Its review stays under
        the path the batch recorded, so it is found from any machine."""
        if os.path.exists(item.image):
            return item.image
        if self.images_dir is None:
            return None
        recorded = Path(item.image)
        parts = recorded.parts[1:] if recorded.anchor else recorded.parts
        for k in range(len(parts), 0, -1):
            cand = self.images_dir.joinpath(*parts[-k:])
            if cand.exists():
                return os.fspath(cand)
        return None

    def __len__(self) -> int:
        return len(self.items)

    def sidecar(self, item: WorkItem) -> Path:
        """Where the review of ``item`` is autosaved: in the batch folder
        (see :func:`~napari_calc.core.review_sidecar.sidecar_path_for`)."""
        return sidecar_path_for(item.image, self.out_dir)

    def progress(self, item: WorkItem, session: ReviewSession | None = None) -> Progress:
        """How far the review of ``item`` has got: from ``session`` when
        it is open (the review panel's), else read from its autosave
        without touching it."""
        own = session is None
        if own:
            path = self.sidecar(item)
            if not path.is_file() or path.stat().st_size == 0:
                return Progress("to review", to_review=item.n_likely,
                                text=f"{item.n_likely} likely of {item.n_candidates} candidates")
            try:
                session = ReviewSession.restore(path, read_only=True)
            except (NapariCalcError, OSError) as e:
                return Progress("cannot open", text=f"autosave unreadable: {printable(getattr(e, 'reason', e))}")
        df = session.detections.calcifications
        shown = session.visible_mask()
        st = df["status"].to_numpy()
        acc = int(((st == "accepted") & shown).sum())
        rej = int(((st == "rejected") & shown).sum())
        add = int((st == "added").sum())
        left = int(((st == "candidate") & shown).sum())
        labelled = bool(len(df)) and bool(
            (df[[c for c in ("morphology", "distribution", "suspicion") if c in df.columns]]
             .astype(str) != "").to_numpy().any())
        decided = bool(acc or rej or add or labelled or (st != "candidate").any())
        if own:
            session.close()
        # opened and looked at, nothing decided yet (its autosave holds only
        # the table): still to review, not "in progress"
        state = "reviewed" if left == 0 else ("in progress" if decided else "to review")
        parts = [f"{acc} accepted", f"{rej} rejected"] + ([f"{add} added"] if add else [])
        text = ", ".join(parts) + (f", {left} to review" if left else "")
        return Progress(state, acc, rej, add, left, text)

    def find(self, image_or_stem) -> int | None:
        """Index of the item whose image path or stem is ``image_or_stem``."""
        key = os.fspath(image_or_stem)
        for i, it in enumerate(self.items):
            if key in (it.stem, it.image):
                return i
        return None

    def next_index(self, current: int | None, *, direction: int = +1, to_review_only: bool = False,
                   progress: dict | None = None) -> int | None:
        """The next (``direction`` +1) or previous (-1) item after
        ``current`` (None: from the start or the end), optionally only
        among those not reviewed yet (``progress``: known states by index,
        to save reading autosaves again). None when there is none."""
        n = len(self.items)
        if n == 0:
            return None
        step = 1 if direction >= 0 else -1
        start = (-1 if step > 0 else n) if current is None else current
        i = start + step
        while 0 <= i < n:
            if not to_review_only:
                return i
            p = (progress or {}).get(i) or self.progress(self.items[i])
            if p.state in ("to review", "in progress"):
                return i
            i += step
        return None

    def save_reviewed(self, item: WorkItem, detections) -> list[Path]:
        """Write a reviewed image's tables over its outputs in the batch
        folder: the calcification and cluster tables, and the detections
        JSON when the batch wrote one (:data:`REWRITTEN_FORMATS`; each file
        atomically). Returns the files written.

        ``detections`` are written as they are: the tables of a batch run
        with ``--deidentify`` hold deidentified metadata already."""
        from .export import write_outputs

        formats = [f for f in ("json",) if f in item.outputs]
        target = Path(item.outputs["csv"])
        stem = target.name[: -len(".calcifications.csv")]
        paths = write_outputs(detections, target.parent, stem, formats)
        return [Path(p) for p in paths.values()]

    def stale_tables(self) -> list[WorkItem]:
        """Items whose autosave is newer than their calcification table (a
        review whose tables were not written yet, e.g. napari was closed on
        it)."""
        out = []
        for it in self.items:
            sc = self.sidecar(it)
            try:
                if sc.is_file() and sc.stat().st_mtime_ns > Path(it.outputs["csv"]).stat().st_mtime_ns:
                    out.append(it)
            except OSError:
                continue
        return out


def read_worklist(out_dir, images_dir=None) -> Worklist:
    """The worklist of a ``napari-calc detect`` output folder.

    Parameters
    ----------
    out_dir : path-like
        The folder given as ``--out`` (searched recursively for the
        ``<stem>.done.json`` markers the batch writes when an image is
        finished).
    images_dir : path-like, optional
        Where the images are now, when not where the batch read them (see
        :meth:`Worklist.image_path`).

    Returns
    -------
    Worklist

    Raises
    ------
    NapariCalcError
        The folder does not exist, is not a folder, or holds no finished
        image (one line naming it, with what to run).
    """
    d = Path(os.path.abspath(os.fspath(out_dir)))
    if images_dir is not None and not os.path.isdir(images_dir):
        raise NapariCalcError("not a folder: give --images the folder the images are in now"
                              if os.path.exists(images_dir) else "images folder not found", images_dir)
    if not d.exists():
        raise NapariCalcError("folder not found", d)
    if not d.is_dir():
        raise NapariCalcError("not a folder: give the --out folder of napari-calc detect", d)
    items, problems = [], []
    try:
        markers = sorted(p for p in d.rglob(f"*{MARKER_SUFFIX}") if p.is_file())
    except OSError as e:
        raise NapariCalcError(f"cannot list the folder ({e.strerror or e})", d) from None
    for m in markers:
        try:
            items.append(_marker_item(d, m))
        except (OSError, ValueError, KeyError, TypeError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else \
                "not valid JSON: damaged" if isinstance(e, json.JSONDecodeError) else e
            problems.append(f"{printable(m)}: cannot be used ({printable(why)})")
    if not items:
        hint = (f" (but {counted(len(problems), 'unusable marker')}, e.g. {problems[0]})" if problems else "")
        ran = (d / MANIFEST_NAME).is_file()
        raise NapariCalcError(
            f"no image finished by napari-calc detect here{hint}"
            + ("" if ran else f"; run: napari-calc detect IMAGES --out {printable(d)}"), d)
    items.sort(key=lambda it: _natural_key(it.stem))
    return Worklist(d, items, problems, images_dir=images_dir)

