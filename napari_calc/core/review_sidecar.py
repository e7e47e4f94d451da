"""The review sidecar: a crash-safe JSON-lines journal of review actions.

Layout of ``<stem>.napari-calc-review.jsonl``:

* line 1, the **header**: ``{"format": "napari-calc review", "version": 1,
  "image": {...}, "params": {...}, "threshold": ..., "detections": <table>,
  "undo": [...], "redo": [...], "history": [...], "seq": n}`` -- a snapshot
  of the calcification table (column-oriented, with dtypes) and of the
  undo/redo stacks at the time the file was (re)written;
* then **one line per action** (``accept``, ``reject``, ``add``, ...,
  ``undo``, ``redo``, ``threshold``), each carrying a sequence number one
  higher than the previous.

Every line is written with a single :func:`os.write` of the whole line
(newline included) followed by :func:`os.fsync`, so after a ``kill -9`` the
file holds every acknowledged action and, at worst, one partial last line,
which :func:`read_sidecar` ignores (and :class:`SidecarWriter` cuts off
before appending again). The header is only ever written through
:func:`napari_calc.core.atomic.atomic_write` (temporary file + rename), both
when the file is created and when it is compacted (rewritten with a fresh
snapshot every :data:`COMPACT_EVERY` actions, so reopening never replays a
long journal).
"""

from __future__ import annotations

import hashlib
import json
import weakref
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_write
from .errors import NapariCalcError
from ._json import jsonable

__all__ = [
    "FORMAT",
    "VERSION",
    "SUFFIX",
    "COMPACT_EVERY",
    "SidecarError",
    "sidecar_path_for",
    "encode_table",
    "decode_table",
    "frame_from_arrays",
    "jsonable",
    "read_sidecar",
    "SidecarWriter",
    "check_unlocked",
]

FORMAT = "napari-calc review"
VERSION = 1
SUFFIX = ".napari-calc-review.jsonl"
#: The journal is rewritten as a fresh snapshot after this many action lines.
COMPACT_EVERY = 200


class SidecarError(NapariCalcError):
    """A review sidecar that cannot be read (corrupt, wrong format, foreign image)."""


def sidecar_path_for(image_path, project_dir=None) -> Path | None:
    """Where the review of an image is autosaved.

    Parameters
    ----------
    image_path : str or os.PathLike or None
        The image file (or DICOM series folder). ``None`` (an image with no
        file, e.g. the sample) gives ``None`` = no autosave, unless
        ``project_dir`` is given, in which case the name is ``unnamed``.
    project_dir : str or os.PathLike, optional
        A project folder to keep sidecars in instead of next to the images.

    Returns
    -------
    pathlib.Path or None
        ``<image_dir>/<stem>.napari-calc-review.jsonl`` next to the image, or
        ``<project_dir>/<stem>-<hash>.napari-calc-review.jsonl`` where
        ``<hash>`` is 12 hex digits of the SHA-1 of the image's absolute
        path (so two images with the same name in different folders do not
        share a sidecar). Next to the image, when ``<stem>.napari-calc-review.jsonl``
        is the review of another image of that stem (``a.tif`` beside
        ``a.dcm``), ``<name>.napari-calc-review.jsonl`` with the whole file
        name. Never inside the image file itself.
    """
    if image_path is None:
        if project_dir is None:
            return None
        return Path(project_dir) / f"unnamed{SUFFIX}"
    p = Path(os.fspath(image_path))
    name = p.name.rstrip("/") or "image"
    stem = name
    # strip known image suffixes (".ome.tif(f)" as a whole)
    low = name.lower()
    for ext in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".dcm", ".dicom"):
        if low.endswith(ext) and len(name) > len(ext):
            stem = name[: -len(ext)]
            break
    if project_dir is None:
        short = p.parent / f"{stem}{SUFFIX}"
        if stem == name or not short.exists() or _recorded_name(short) in (None, name):
            return short
        # "a.napari-calc-review.jsonl" is the review of another "a.*" here
        # (a.tif beside a.dcm): this image's is named after its whole name
        return p.parent / f"{name}{SUFFIX}"
    digest = hashlib.sha1(os.fspath(p.absolute()).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return Path(project_dir) / f"{stem}-{digest}{SUFFIX}"


def _recorded_name(sidecar: Path) -> str | None:
    """File name of the image a sidecar records (None: unreadable or none)."""
    try:
        with open(sidecar, "rb") as f:
            header = json.loads(f.readline())
        src = header["image"]["source_path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return os.path.basename(os.fspath(src).rstrip("/")) if src else None


# --------------------------------------------------------------------------- encoding

def column_values(values, dtype: str) -> np.ndarray:
    """Turn decoded JSON values into an array of ``dtype`` (``None`` -> NaN for floats)."""
    if dtype.startswith("float"):
        return np.array([np.nan if x is None else x for x in values], dtype=dtype)
    if dtype.startswith("int"):
        return np.array(values, dtype=dtype)
    if dtype == "bool":
        return np.array(values, dtype=bool)
    out = np.empty(len(values), dtype=object)
    out[:] = ["" if x is None else str(x) for x in values]
    return out


def encode_table(df: pd.DataFrame) -> dict:
    """Column-oriented JSON-safe form of a table, with its dtypes."""
    cols = [str(c) for c in df.columns]
    dtypes = [str(df[c].dtype) for c in df.columns]
    data = {}
    for c, dt in zip(df.columns, dtypes):
        arr = df[c].to_numpy()
        if dt.startswith("float"):
            data[str(c)] = [None if not math.isfinite(x) else x for x in arr.tolist()]
        elif dt.startswith("int") or dt == "bool":
            data[str(c)] = arr.tolist()
        else:
            data[str(c)] = ["" if x is None else str(x) for x in arr.tolist()]
    return {"columns": cols, "dtypes": dtypes, "data": data}


def decode_table(obj: dict) -> pd.DataFrame:
    """Inverse of :func:`encode_table`."""
    cols, dtypes, data = obj["columns"], obj["dtypes"], obj["data"]
    if len(cols) != len(dtypes):
        raise ValueError("columns and dtypes differ in length")
    n = {len(data[c]) for c in cols}
    if len(n) > 1:
        raise ValueError("columns differ in length")
    return frame_from_arrays({c: column_values(data[c], dt) for c, dt in zip(cols, dtypes)}, cols)


def frame_from_arrays(arrays: dict, columns) -> pd.DataFrame:
    """A DataFrame from numpy arrays keeping each array's dtype; in
    particular object arrays of strings stay ``object`` (pandas >= 3 would
    otherwise infer its ``str`` dtype, unlike :func:`napari_calc.detect`)."""
    n = len(next(iter(arrays.values()))) if arrays else 0
    idx = pd.RangeIndex(n)
    return pd.DataFrame({c: pd.Series(arrays[c], index=idx, dtype=arrays[c].dtype, copy=False)
                         for c in columns}, columns=list(columns))


def dumps_line(obj: dict) -> bytes:
    """One journal line (compact JSON, strictly standard, newline-terminated)."""
    return (json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- reading

def read_sidecar(path) -> tuple[dict, list[dict], int, bool]:
    """Read a sidecar.

    Returns
    -------
    header : dict
    actions : list of dict
        The complete action lines after the header.
    good_bytes : int
        Length of the valid prefix of the file (everything up to and
        including the last complete line).
    dropped_tail : bool
        True when a partial or unparsable last line was ignored.

    Raises
    ------
    SidecarError
        Missing/unreadable file, bad header, or a bad line that is not the
        last one.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SidecarError(f"cannot read review sidecar: {e.strerror or e}", path) from None
    if not raw.strip():
        raise SidecarError("review sidecar is empty", path)
    lines = raw.split(b"\n")
    # lines[-1] is b"" when the file ends with a newline, else a partial line
    offsets = []
    pos = 0
    for ln in lines:
        offsets.append(pos)
        pos += len(ln) + 1
    try:
        header = json.loads(lines[0])
    except (ValueError, UnicodeDecodeError):
        raise SidecarError("not a napari-calc review sidecar (line 1 is not JSON)", path) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SidecarError("not a napari-calc review sidecar (no header)", path)
    if header.get("version") != VERSION:
        raise SidecarError(f"review sidecar version {header.get('version')!r} is not supported "
                           f"(this napari-calc reads version {VERSION})", path)
    if len(lines) == 1:
        # header without its newline: it was written atomically, so it is whole
        return header, [], len(raw), False
    actions: list[dict] = []
    good = offsets[1]
    dropped = False
    body = lines[1:]
    for k, ln in enumerate(body):
        last = k == len(body) - 1
        if last and ln == b"":
            break
        complete = not last  # a line followed by a newline
        try:
            obj = json.loads(ln)
            ok = isinstance(obj, dict) and "op" in obj
        except (ValueError, UnicodeDecodeError):
            ok = False
        if not ok:
            if last or (k == len(body) - 2 and body[-1] == b""):
                dropped = True
                break
            raise SidecarError(f"review sidecar is corrupt at line {k + 2}", path)
        if not complete:
            # the whole object but no newline yet: keep it, the writer adds "\n"
            actions.append(obj)
            good = len(raw)
            break
        actions.append(obj)
        good = offsets[k + 2]
    return header, actions, good, dropped


# --------------------------------------------------------------------------- writing

try:  # advisory lock so that two processes never append to one journal
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: Writers open in this process, by resolved path (a new one supersedes an old one).
_OPEN_WRITERS: "weakref.WeakValueDictionary[str, SidecarWriter]" = weakref.WeakValueDictionary()


def _key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(os.fspath(path)))


def _try_lock(fd: int, path: Path) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SidecarError("the review is open in another napari-calc session (sidecar is locked)",
                           path) from None
    except OSError:
        pass  # file systems without locks (some network mounts): go on unlocked


def check_unlocked(path) -> None:
    """Raise :class:`SidecarError` when another process is editing ``path``.
    A writer of this process on the same file is closed (superseded)."""
    path = Path(path)
    old = _OPEN_WRITERS.get(_key(path))
    if old is not None:
        old.close(superseded=True)
    if fcntl is None or not path.exists():
        return
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        _try_lock(fd, path)
    finally:
        os.close(fd)  # releases the probe lock

def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class SidecarWriter:
    """Appends journal lines to a sidecar, durably, one ``os.write`` per line.

    Parameters
    ----------
    path : path-like
        The sidecar.
    fsync : bool
        ``os.fsync`` after every line (default). Without it, a ``kill -9``
        still loses nothing acknowledged (the data are in the OS page cache),
        but a power cut may.
    """

    def __init__(self, path, *, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self._fd: int | None = None
        self.lines_since_header = 0
        self.superseded = False
        self.closed = False

    # -- creation / compaction
    def write_header(self, header: dict) -> None:
        """Atomically (re)write the file as just ``header``; reopen for appending.

        The old file stays open (and locked) until the new one is in place
        and locked."""
        self._check_open(allow_unopened=True)
        data = dumps_line(header)
        if fcntl is None and self._fd is not None:
            # Windows cannot rename over a file that is open: close it first
            os.close(self._fd)
            self._fd = None
        try:
            with atomic_write(self.path, "wb") as f:
                f.write(data)
        except OSError as e:
            raise SidecarError(f"cannot write review sidecar: {e.strerror or e}", self.path) from None
        _fsync_dir(self.path.parent)
        old = self._fd
        self._fd = None
        try:
            self._open()
        finally:
            if old is not None:
                os.close(old)
        self.lines_since_header = 0

    def open_existing(self, good_bytes: int, n_actions: int) -> None:
        """Continue an existing journal: cut a partial last line off, make
        sure the file ends with a newline, and open it for appending."""
        self._check_open(allow_unopened=True)
        try:
            self._open()
            size = self.path.stat().st_size
            if size > good_bytes:
                os.ftruncate(self._fd, good_bytes)
            if good_bytes > 0:
                with open(self.path, "rb") as f:
                    f.seek(good_bytes - 1)
                    last = f.read(1)
                if last != b"\n":
                    self._write_all(b"\n")
        except OSError as e:
            raise SidecarError(f"cannot write review sidecar: {e.strerror or e}", self.path) from None
        self.lines_since_header = n_actions

    def _check_open(self, allow_unopened: bool = False) -> None:
        if self.superseded:
            raise SidecarError("this review session was superseded by a newer one on the same sidecar; "
                               "its changes are no longer saved", self.path)
        if self.closed or (self._fd is None and not allow_unopened):
            raise SidecarError("review session is closed; its sidecar is no longer written", self.path)

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags)
        except OSError as e:
            raise SidecarError(f"cannot open review sidecar: {e.strerror or e}", self.path) from None
        try:
            _try_lock(fd, self.path)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        _OPEN_WRITERS[_key(self.path)] = self

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(self._fd)

    def append(self, obj: dict) -> None:
        """Append one action line (a single write, then fsync)."""
        self._check_open()
        data = dumps_line(obj)
        try:
            self._write_all(data)
        except OSError as e:
            raise SidecarError(f"cannot write review sidecar: {e.strerror or e}", self.path) from None
        self.lines_since_header += 1

    def close(self, superseded: bool = False) -> None:
        """Close (and unlock) the file."""
        if superseded:
            self.superseded = True
        self.closed = True
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None
                if _OPEN_WRITERS.get(_key(self.path)) is self:
                    del _OPEN_WRITERS[_key(self.path)]

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass
