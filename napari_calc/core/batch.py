"""Batch detection over many images: local processes, resumable, fault-isolated.

:func:`run_batch` drives ``napari-calc detect``. Each input image becomes a
*task* (a small JSON-ready dict: the input path, its output stem and the run
settings) that :func:`process_input` executes: :func:`~.pipeline.process_file`
then the completeness marker. The same function runs

* in the calling process (``workers=1``),
* in a pool of local worker processes (:class:`LocalPool`: a crashed or
  timed-out worker is killed and replaced, only its input fails), or
* on a dask.distributed cluster (:mod:`.distributed`),

so every backend writes identical files.

Output stems
    ``<stem>`` is the file name without its image extension
    (:func:`~.pipeline.output_stem`). When several inputs of one run share a
    stem (compared case-insensitively), each of them is named after its path
    relative to the input folder it was found in, with ``__`` between the
    parts: ``left/a.dcm`` and ``right/a.dcm`` under ``data/`` give
    ``left__a`` and ``right__a``. If that is still ambiguous (e.g. the same
    relative path under two folders given on the command line) the path
    relative to the deepest common folder of the clashing inputs is used, and
    as a last resort ``__2``, ``__3``... is appended in the order of the
    absolute paths. The rule only depends on the set of inputs, so a rerun
    over the same inputs gives the same stems.

Resuming
    After all outputs of an input are written (each atomically), a marker
    ``<stem>.done.json`` is written last, holding the input's absolute path,
    size and modification time, the output file names and a hash of
    everything that changes the outputs (napari-calc version, shipped model
    files, detection parameters, spacing override, formats,
    de-identification). A rerun skips
    an input whose marker matches and whose outputs all exist; anything else
    is recomputed (``force=True`` recomputes everything). A run killed at any
    moment therefore leaves either complete outputs *with* a marker, or no
    marker (the input is redone). The marker also holds each output's
    SHA-256: an output changed since (edited in a spreadsheet or in 3D
    Slicer), or a table holding a review, is copied to ``<name>.bak`` before
    a recompute replaces it.

Run manifest
    ``<out>/napari-calc-run.json`` (written atomically at the start, every few
    seconds and at the end): versions, parameters, and one record per input
    with its status (``done``, ``skipped``, ``failed`` or ``pending``), the
    failure reason, the outputs and the seconds it took.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .errors import InvalidParameterError, NapariCalcError, counted, os_reason, printable

__all__ = [
    "MANIFEST_NAME",
    "MARKER_SUFFIX",
    "BatchResult",
    "available_cores",
    "threads_per_worker",
    "collect_inputs",
    "assign_stems",
    "settings_key",
    "marker_path",
    "is_complete",
    "process_input",
    "LocalPool",
    "run_batch",
    "versions",
]

#: Name of the run manifest written into the output folder.
MANIFEST_NAME = "napari-calc-run.json"
#: Suffix of the per-input completeness marker (``<stem>.done.json``).
MARKER_SUFFIX = ".done.json"
#: Seconds between two intermediate manifest writes.
MANIFEST_INTERVAL_S = 5.0
#: Seconds a new worker process may take to start before its first task's
#: timeout starts counting.
WORKER_START_GRACE_S = 120.0
#: Modules a worker process imports before it takes a task (so that the
#: per-input timeout does not count them).
WORKER_PRELOAD = ("napari_calc.core.batch", "napari_calc.core.pipeline", "napari_calc.core.read",
                  "napari_calc.core.export")
#: The line ``python -m napari_calc.core.batch`` prints when it is ready for
#: its task.
READY_LINE = "napari-calc worker ready"


# --------------------------------------------------------------------------- cores

def available_cores() -> int:
    """Number of CPUs this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Kernel threads for each of ``workers`` processes on ``cores`` CPUs.

    ``max(1, cores // workers)``, so that the processes together do not
    oversubscribe the machine.
    """
    cores = available_cores() if cores is None else int(cores)
    return max(1, cores // max(1, int(workers)))


# --------------------------------------------------------------------------- inputs and stems

@dataclasses.dataclass
class InputItem:
    """One image to process.

    Attributes
    ----------
    path : str
        Absolute path of the image file or DICOM series folder.
    root : str
        Absolute path of the command-line argument it was found under (the
        folder, or the file itself).
    stem : str
        Output stem (unique within the run).
    display : str
        The path as the user would write it (relative when the argument
        was), used in messages.
    """

    path: str
    root: str
    stem: str = ""
    display: str = ""


def collect_inputs(args: Iterable[str | os.PathLike], recursive: bool = True
                   ) -> tuple[list[InputItem], list[tuple[str, str]]]:
    """Expand command-line inputs into images, with unique output stems.

    Parameters
    ----------
    args : iterable of path
        Files and folders as given by the user.
    recursive : bool
        Descend into sub-folders (:func:`napari_calc.core.read.find_inputs`).

    Returns
    -------
    items : list of InputItem
        The images in a stable order, duplicates removed, stems assigned by
        :func:`assign_stems`.
    problems : list of (str, str)
        ``(argument, reason)`` for arguments that gave nothing to process
        (an empty or unreadable folder), and ``(path, reason)`` for a
        sub-folder that cannot be listed or a dangling symbolic link named
        like an image (the rest of the folder is still processed).
    """
    from .read import _means_folder, find_inputs, misnamed_files

    items: list[InputItem] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for arg in args:
        arg = os.fspath(arg)
        root = os.path.abspath(arg)
        inner: list[tuple[str, str]] = []  # unlistable sub-folders, dangling links
        if not os.path.exists(arg) and _means_folder(arg):  # "scans/": not "file not found"
            problems.append((arg, "folder not found"))
            continue
        try:
            found = find_inputs([arg], recursive=recursive, errors=inner)
        except NapariCalcError as exc:
            problems.append((arg, exc.reason))
            continue
        except OSError as exc:
            problems.append((arg, f"cannot list folder ({os_reason(exc)})"))
            continue
        problems.extend(inner)
        if os.path.isdir(arg):
            found = sorted(set(found) | set(misnamed_files(arg, found, recursive)),
                           key=lambda f: found.index(f) if f in found else len(found))
            if not found and not inner:
                problems.append((arg, "no DICOM or TIFF images found in this folder"))
                continue
        for f in found:
            key = os.path.abspath(f)
            if key in seen:
                continue
            seen.add(key)
            items.append(InputItem(path=key, root=root, display=os.fspath(f)))
    assign_stems(items)
    return items, problems




def _rel_stem(path: str, base: str) -> str:
    from .pipeline import output_stem

    rel = os.path.relpath(path, base) if base else os.path.basename(path)
    parts = [p for p in Path(rel).parts if p not in ("", ".", os.sep)]
    if not parts or parts[0] == "..":
        parts = [os.path.basename(path)]
    parts[-1] = output_stem(parts[-1])
    return "__".join(parts)


def assign_stems(items: list[InputItem]) -> list[InputItem]:
    """Give every item a unique output stem (in place; see the module doc).

    Parameters
    ----------
    items : list of InputItem

    Returns
    -------
    list of InputItem
        The same list.
    """
    from .pipeline import output_stem

    for it in items:
        it.stem = output_stem(it.path)

    def clashes() -> dict[str, list[InputItem]]:
        groups: dict[str, list[InputItem]] = {}
        for it in items:
            groups.setdefault(it.stem.casefold(), []).append(it)
        return {k: v for k, v in groups.items() if len(v) > 1}

    # 1. relative to the input folder each was found in
    for group in clashes().values():
        for it in group:
            base = it.root if os.path.isdir(it.root) and it.root != it.path else os.path.dirname(it.root)
            it.stem = _rel_stem(it.path, base)
    # 2. relative to the deepest common folder of the clashing inputs
    for group in clashes().values():
        common = os.path.commonpath([os.path.dirname(it.path) for it in group])
        for it in group:
            it.stem = _rel_stem(it.path, common)
    # 3. numbered, in the order of the absolute paths
    for group in clashes().values():
        for i, it in enumerate(sorted(group, key=lambda t: t.path)):
            if i:
                it.stem = f"{it.stem}__{i + 1}"
    taken = {it.stem.casefold() for it in items}
    assert len(taken) == len(items)  # guaranteed by step 3 (paths are distinct)
    return items


# --------------------------------------------------------------------------- markers

def versions() -> dict[str, Any]:
    """Versions recorded in the run manifest."""
    import numpy

    out: dict[str, Any] = {}
    try:
        from .. import __version__ as v
    except ImportError:  # pragma: no cover
        v = "unknown"
    out["napari-calc"] = v
    out["python"] = platform.python_version()
    out["numpy"] = numpy.__version__
    try:
        import pydicom

        out["pydicom"] = pydicom.__version__
    except ImportError:  # pragma: no cover
        out["pydicom"] = None
    try:
        from .. import _kernel

        out["kernel_openmp"] = bool(_kernel.openmp_enabled())
        out["kernel_max_threads"] = int(_kernel.max_threads())
    except Exception:  # pragma: no cover - kernel not built
        out["kernel_openmp"] = None
    out["platform"] = platform.platform()
    return out


def _model_digest() -> str | None:
    """SHA-256 of the shipped model files (``napari_calc/data/*.json``): the
    scores depend on them, so a new model recomputes even at the same version."""
    try:
        from importlib import resources

        data = resources.files("napari_calc").joinpath("data")
        files = sorted((f for f in data.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode() + b"\0" + f.read_bytes())
        return h.hexdigest() if files else None
    except (OSError, ModuleNotFoundError, AttributeError, NotADirectoryError):
        return None


def settings_key(*, params: dict | None, formats, spacing_mm, deidentify: bool) -> str:
    """Hash of everything that changes an input's outputs.

    napari-calc version, shipped model files, detection parameters (defaults
    filled in), formats, spacing override and de-identification.

    Parameters
    ----------
    params : dict or None
        Detection parameters (defaults are filled in, so ``{}`` and the
        explicit defaults hash alike).
    formats : iterable of str
    spacing_mm : float, tuple or None
    deidentify : bool

    Returns
    -------
    str
        Hex SHA-256.
    """
    from .detect import DetectionParams

    resolved = dataclasses.asdict(DetectionParams(**(params or {})))
    doc = {
        "napari-calc": versions()["napari-calc"],
        "models": _model_digest(),
        "params": resolved,
        "formats": sorted(set(formats) | {"csv"}),
        "spacing_mm": list(spacing_mm) if isinstance(spacing_mm, (tuple, list)) else spacing_mm,
        "deidentify": bool(deidentify),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def marker_path(out_dir, stem: str) -> Path:
    """``<out_dir>/<stem>.done.json``."""
    return Path(out_dir) / f"{stem}{MARKER_SUFFIX}"


def _input_signature(path: str) -> tuple[int, int]:
    st = os.stat(path)
    if os.path.isdir(path):  # a DICOM series: the newest of its files
        size, mtime = 0, st.st_mtime_ns
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if os.path.isfile(full):
                s = os.stat(full)
                size += s.st_size
                mtime = max(mtime, s.st_mtime_ns)
        return size, mtime
    return st.st_size, st.st_mtime_ns


def is_complete(task: dict) -> dict | None:
    """The marker of a task when its outputs are complete and current.

    Returns
    -------
    dict or None
        The marker contents when ``<stem>.done.json`` exists, names the same
        input with the same size and modification time and the same
        :func:`settings_key`, and every listed output exists; else ``None``.
    """
    mp = marker_path(task["out_dir"], task["stem"])
    try:
        marker = json.loads(mp.read_text(encoding="utf-8"))
        size, mtime = _input_signature(task["path"])
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict):
        return None
    if (marker.get("input") != task["path"] or marker.get("size") != size
            or marker.get("mtime_ns") != mtime or marker.get("key") != task["key"]):
        return None
    outs = marker.get("outputs")
    if not isinstance(outs, dict) or not outs:
        return None
    if not all((Path(task["out_dir"]) / name).is_file() for name in outs.values()):
        return None
    return marker


def _marker_identity(task: dict) -> tuple[int, int] | None:
    """(inode, mtime) of a task's marker file (a rewrite, which is a rename,
    changes both), or None when there is none."""
    try:
        st = marker_path(task["out_dir"], task["stem"]).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def other_input(task: dict) -> str | None:
    """The input an earlier run wrote this task's outputs for, when it is
    another image: the marker names another path, and not this file moved
    (same name, size and modification time). Else None."""
    try:
        marker = json.loads(marker_path(task["out_dir"], task["stem"]).read_text(encoding="utf-8"))
        before = marker["input"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not isinstance(before, str) or before == task["path"]:
        return None
    try:
        size, mtime = _input_signature(task["path"])
    except OSError:
        size = mtime = None
    if (os.path.basename(before) == os.path.basename(task["path"]) and marker.get("size") == size
            and marker.get("mtime_ns") == mtime):
        return None  # the same file, moved
    return before


# --------------------------------------------------------------------------- the unit of work

def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def make_task(item: InputItem, out_dir, *, formats, params, spacing_mm, deidentify: bool,
              n_threads: int | dict, key: str | None = None) -> dict:
    """The picklable description of one input's work (see :func:`process_input`)."""
    if key is None:
        key = settings_key(params=params, formats=formats, spacing_mm=spacing_mm,
                           deidentify=deidentify)
    return {
        "path": item.path,
        "stem": item.stem,
        "out_dir": os.path.abspath(os.fspath(out_dir)),
        "formats": list(formats),
        "params": dict(params or {}),
        "spacing_mm": list(spacing_mm) if isinstance(spacing_mm, (tuple, list)) else spacing_mm,
        "deidentify": bool(deidentify),
        "n_threads": ({str(k): int(v) for k, v in n_threads.items()} if isinstance(n_threads, dict)
                      else int(n_threads)),
        "key": key,
    }


def process_input(task: dict) -> dict:
    """Process one input and write its completeness marker last.

    Never raises for a bad input: the result says what happened, so that one
    image cannot stop a batch.

    Parameters
    ----------
    task : dict
        From :func:`make_task`. ``n_threads`` may be a dict ``{host: n}``
        (dask: threads per task on each host, looked up with
        :func:`socket.gethostname`).

    Returns
    -------
    dict
        ``path``, ``stem``, ``status`` (``"done"`` or ``"failed"``),
        ``reason`` (failed only), ``outputs`` (format -> file name),
        ``kept`` (earlier outputs holding someone's work, copied aside
        before being replaced: see
        :func:`napari_calc.core.pipeline.keep_edited_outputs`),
        ``n_calcifications``, ``n_clusters``, ``seconds`` (wall time in the
        worker) and ``detect_seconds``.
    """
    from .pipeline import process_file

    t0 = time.perf_counter()
    res: dict[str, Any] = {"path": task["path"], "stem": task["stem"]}
    out_dir = Path(task["out_dir"])
    n_threads = task.get("n_threads", 0)
    if isinstance(n_threads, dict):
        import socket

        n_threads = int(n_threads.get(socket.gethostname(), n_threads.get("*", 0)))
    spacing = task.get("spacing_mm")
    if isinstance(spacing, list):
        spacing = tuple(spacing)
    mp = marker_path(out_dir, task["stem"])
    earlier = _earlier_outputs(mp)
    try:
        from .export import output_paths

        ours = [p.name for p in output_paths(out_dir, task["stem"], tuple(task["formats"])).values()]
    except NapariCalcError:
        ours = []
    before = _output_states(out_dir, ours)
    try:
        # what the earlier run wrote, to tell an output edited since from ours
        try:
            written = json.loads(mp.read_text(encoding="utf-8")).get("sha256")
        except (OSError, ValueError, AttributeError):
            written = None
        # the marker of an earlier run goes first: from here on the outputs
        # are in flux until the new marker is written
        try:
            mp.unlink()
        except FileNotFoundError:
            pass
        size, mtime = _input_signature(task["path"]) if os.path.exists(task["path"]) else (None, None)
        summary = process_file(task["path"], out_dir, stem=task["stem"], formats=tuple(task["formats"]),
                               params=task.get("params") or None, spacing_mm=spacing,
                               n_threads=n_threads, deidentify=task.get("deidentify", False),
                               keep_edited=True, written=written if isinstance(written, dict) else None)
        outputs = {k: os.path.basename(v) for k, v in summary["outputs"].items()}
        from .pipeline import file_digest

        digests = {os.path.basename(v): file_digest(v) for v in summary["outputs"].values()}
        marker = {
            "format": "napari-calc done marker",
            "version": 1,
            "input": task["path"],
            "size": size,
            "mtime_ns": mtime,
            "key": task["key"],
            "outputs": outputs,
            "sha256": digests,
            "n_calcifications": summary["n_calcifications"],
            "n_clusters": summary["n_clusters"],
            "n_likely": summary["n_likely"],
            "n_likely_clusters": summary["n_likely_clusters"],
        }
        atomic_write_text(mp, json.dumps(marker, indent=1, sort_keys=True) + "\n")
        res.update(status="done", outputs=outputs, n_calcifications=summary["n_calcifications"],
                   n_clusters=summary["n_clusters"], n_likely=summary["n_likely"],
                   n_likely_clusters=summary["n_likely_clusters"], detect_seconds=summary.get("seconds"),
                   kept=summary.get("kept") or {})
    except NapariCalcError as exc:
        res.update(status="failed", reason=_one_line(exc.reason))
    except MemoryError:
        res.update(status="failed", reason="out of memory")
    except OSError as exc:
        res.update(status="failed", reason=_one_line(f"{os_reason(exc)}"
                                                     + (f" ({exc.filename})" if exc.filename else "")))
    except Exception as exc:  # a bug: keep the batch going, keep the reason on one line
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
        res.update(status="failed", reason=_one_line(f"internal error {type(exc).__name__}: {exc}{where}"))
    if res["status"] == "failed":
        # no partial set: what this run wrote goes (a reviewed table it
        # replaced was copied aside first); the input is redone next time
        for name, state in _output_states(out_dir, ours).items():
            if state is not None and state != before.get(name):
                with contextlib.suppress(OSError):
                    os.unlink(out_dir / name)
        if earlier is not None:
            _restore_marker(mp, *earlier)
    res["seconds"] = round(time.perf_counter() - t0, 4)
    return res


def _output_states(out_dir: Path, names) -> dict:
    """``name -> (inode, mtime_ns, size)`` of each output (``None``: missing)."""
    states = {}
    for name in names:
        try:
            st = (out_dir / name).stat()
            states[name] = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            states[name] = None
    return states


def _earlier_outputs(mp: Path) -> tuple[bytes, dict] | None:
    """The marker of an earlier run (its bytes) and the state of the outputs
    it names, or None when there is none."""
    try:
        raw = mp.read_bytes()
        outs = json.loads(raw).get("outputs")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(outs, dict) or not outs:
        return None
    return raw, _output_states(mp.parent, [str(v) for v in outs.values()])


def _restore_marker(mp: Path, raw: bytes, states: dict) -> None:
    """After a failed re-run that wrote nothing: put the earlier marker back,
    so that its outputs (perhaps reviewed since) stay listed by ``napari-calc
    review``; a later run still redoes the input (the marker names the input
    and settings of that earlier run). Not when any output changed."""
    if all(v is not None for v in states.values()) and \
            _output_states(mp.parent, list(states)) == states and not mp.exists():
        with contextlib.suppress(OSError, NapariCalcError):
            atomic_write_text(mp, raw.decode("utf-8"))


# --------------------------------------------------------------------------- local process pool

def _exit_with_parent() -> None:  # pragma: no cover - runs in the child
    """Exit this worker as soon as the process that started it is gone.

    A worker is a child of multiprocessing's fork server, not of the batch
    process, so nothing else stops it when the batch process is killed
    (``kill -9``, the out-of-memory killer): it would finish its image and
    write outputs into a folder whose run had ended. The parent's sentinel
    (a pipe whose other end only the parent holds) becomes readable when the
    parent dies.
    """
    import multiprocessing
    import threading
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch():
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="napari-calc-parent-watch", daemon=True).start()


def _worker_main(conn, fn) -> None:  # pragma: no cover - runs in the child
    # the parent handles Ctrl-C and stop signals: it stops its workers itself
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    _exit_with_parent()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        conn.send(("started", None))  # the timeout counts from here
        conn.send(("result", fn(task)))


def _death_reason(exitcode) -> str:
    if exitcode is None:
        return "worker process died"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"worker process crashed ({name})"
    return f"worker process exited with status {exitcode}"


class _Worker:
    def __init__(self, ctx, fn):
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, fn), daemon=True,
                                name="napari-calc-worker")
        self.proc.start()
        child.close()
        self.task: dict | None = None
        self.started = 0.0
        self.acked = False

    def deadline(self, timeout: float | None) -> float | None:
        if timeout is None:
            return None
        return self.started + timeout + (0.0 if self.acked else WORKER_START_GRACE_S)

    def kill(self) -> None:
        try:
            self.proc.kill()
        except Exception:  # pragma: no cover
            pass
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(2)
        if self.proc.is_alive():
            self.kill()
        else:
            self.conn.close()


def _start_forkserver_without_cwd() -> None:
    """Start multiprocessing's fork server (once per process) so that it
    imports napari-calc from where this process did.

    The server is started as ``python -c ...``, which puts the current
    directory first on its ``sys.path``, and Python 3.11's server ignores
    the parent's path. Run from a source checkout next to an installed
    copy, the workers would import the checkout (without its compiled
    kernel). ``PYTHONSAFEPATH=1`` (Python >= 3.11) keeps the current
    directory off the server's path; ``PYTHONPATH`` still applies.
    """
    from multiprocessing import forkserver

    old = os.environ.get("PYTHONSAFEPATH")
    os.environ["PYTHONSAFEPATH"] = "1"
    try:
        forkserver.ensure_running()
    finally:
        if old is None:
            del os.environ["PYTHONSAFEPATH"]
        else:
            os.environ["PYTHONSAFEPATH"] = old


class LocalPool:
    """A pool of local worker processes that survives crashes and timeouts.

    Unlike :class:`concurrent.futures.ProcessPoolExecutor` (where one crashed
    worker breaks the whole pool) each worker here has its own pipe: when a
    worker dies (segfault, ``os._exit``, out-of-memory kill) or exceeds the
    per-task ``timeout``, it is killed and replaced, and only the task it was
    running fails.

    Parameters
    ----------
    workers : int
        Number of processes.
    fn : callable(dict) -> dict
        Module-level function run on each task (default :func:`process_input`).
    timeout : float, optional
        Seconds a single task may take.
    context : str, optional
        multiprocessing start method (default ``forkserver`` where available,
        else ``spawn``; never ``fork``, which is unsafe with threads).
    """

    def __init__(self, workers: int, fn: Callable[[dict], dict] = None, *, timeout: float | None = None,
                 context: str | None = None):
        import multiprocessing as mp

        if context is None:
            context = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self.ctx = mp.get_context(context)
        if context == "forkserver":
            # workers fork from a server that has napari-calc imported already
            self.ctx.set_forkserver_preload(list(WORKER_PRELOAD))
            _start_forkserver_without_cwd()
        self.fn = fn or process_input
        self.n = max(1, int(workers))
        self.timeout = timeout
        self._workers: list[_Worker] = []

    def _failed(self, task: dict, reason: str, seconds: float) -> dict:
        return {"path": task["path"], "stem": task["stem"], "status": "failed", "reason": reason,
                "seconds": round(seconds, 4)}

    def map_unordered(self, tasks: Iterable[dict]) -> Iterator[dict]:
        """Run ``fn`` on every task; yield the results as they complete."""
        from multiprocessing.connection import wait

        pending = deque(tasks)
        idle: list[_Worker] = []
        busy: list[_Worker] = []
        try:
            while pending or busy:
                while pending and (idle or len(self._workers) < self.n):
                    w = idle.pop() if idle else self._spawn()
                    w.task = pending.popleft()
                    w.started = time.monotonic()
                    w.acked = False
                    try:
                        w.conn.send(w.task)
                    except (OSError, ValueError):  # died while idle
                        task = w.task
                        self._retire(w)
                        pending.appendleft(task)
                        continue
                    busy.append(w)
                wait_s = 0.5
                if self.timeout is not None:
                    now = time.monotonic()
                    wait_s = min([wait_s] + [max(0.0, w.deadline(self.timeout) - now) for w in busy])
                ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=wait_s))
                for w in list(busy):
                    if w.conn in ready or w.proc.sentinel in ready:
                        result, alive = None, True
                        try:
                            while result is None and w.conn.poll():
                                kind, payload = w.conn.recv()
                                if kind == "started":
                                    w.started, w.acked = time.monotonic(), True
                                else:
                                    result = payload
                        except (EOFError, OSError):
                            alive = False
                        if result is None and alive and w.proc.is_alive():
                            continue  # only the "started" message: still working
                        busy.remove(w)
                        if result is not None:
                            w.task = None
                            idle.append(w)
                            yield result
                        else:
                            w.proc.join(1)
                            task, secs = w.task, time.monotonic() - w.started
                            reason = _death_reason(w.proc.exitcode)
                            self._retire(w)
                            yield self._failed(task, reason, secs)
                    elif self.timeout is not None and time.monotonic() > w.deadline(self.timeout):
                        busy.remove(w)
                        task, secs = w.task, time.monotonic() - w.started
                        self._retire(w)
                        yield self._failed(task, f"timed out after {self.timeout:g} s", secs)
        finally:
            self.close()

    def _spawn(self) -> _Worker:
        w = _Worker(self.ctx, self.fn)
        self._workers.append(w)
        return w

    def _retire(self, w: _Worker) -> None:
        w.kill()
        if w in self._workers:
            self._workers.remove(w)

    def close(self) -> None:
        """Stop every worker (killing those still busy)."""
        workers, self._workers = self._workers, []
        for w in workers:
            if w.task is not None:
                w.kill()
            else:
                w.stop()


def _serial(tasks: Iterable[dict], fn: Callable[[dict], dict] = None) -> Iterator[dict]:
    fn = fn or process_input
    for t in tasks:
        yield fn(t)


# --------------------------------------------------------------------------- the driver

@dataclasses.dataclass
class BatchResult:
    """What :func:`run_batch` did.

    Attributes
    ----------
    records : list of dict
        One per input (and per unusable argument), as in the manifest.
    n_done, n_skipped, n_failed : int
        Inputs computed now, skipped as already complete, failed.
    n_calcifications, n_clusters : int
        Totals over done and skipped inputs (every row of the tables).
    n_likely, n_likely_clusters : int or None
        Of those, the ones scoring at least ``min_score`` (None when an
        input skipped from an older run did not record it).
    min_score : float
        The operating point they are counted at.
    wall_seconds : float
    manifest : pathlib.Path
    """

    records: list[dict]
    n_done: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    n_calcifications: int = 0
    n_clusters: int = 0
    n_likely: int | None = 0
    n_likely_clusters: int | None = 0
    min_score: float = 0.5
    wall_seconds: float = 0.0
    manifest: Path | None = None

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, else 1."""
        return 1 if self.n_failed else 0

    def _counts(self) -> str:
        """"280 candidates (162 with score >= 0.5), 7 clusters (5 with score >= 0.5)"."""
        def part(n, likely, what):
            if likely is None:
                return counted(n, what)
            return f"{counted(n, what)} ({likely} with score >= {self.min_score:g})"
        return (f"{part(self.n_calcifications, self.n_likely, 'candidate')}, "
                f"{part(self.n_clusters, self.n_likely_clusters, 'cluster')}")

    def summary_lines(self) -> list[str]:
        """The final summary printed by the CLI."""
        n = self.n_done + self.n_skipped + self.n_failed
        skipped = f" ({self.n_skipped} already complete, skipped)" if self.n_skipped else ""
        return [
            f"{counted(n, 'image')}: {self.n_done + self.n_skipped} done{skipped}, "
            f"{self.n_failed} failed; {self._counts()}; wall time {self.wall_seconds:.1f} s",
            f"outputs and run manifest: {self.manifest}",
        ]


def _add_likely(result: "BatchResult", rec: dict) -> None:
    """Add an input's counts at the operating point (unknown: None)."""
    for name in ("n_likely", "n_likely_clusters"):
        v, total = rec.get(name), getattr(result, name)
        setattr(result, name, None if v is None or total is None else total + int(v))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _clean_temporaries(out_dir: Path, stems: Iterable[str]) -> None:
    """Remove temporary files an interrupted atomic write left for these stems."""
    try:
        names = os.listdir(out_dir)
    except OSError:
        return
    stems = set(stems)
    for name in names:
        if name.startswith(".") and name.endswith(".tmp"):
            inner = name.lstrip(".")  # also a temporary of a temporary ("..a.sr.dcm.1.partial.tmp.x.tmp")
            if any(inner.startswith(s + ".") for s in stems):
                try:
                    os.unlink(out_dir / name)
                except OSError:
                    pass


def _remove_empty(dirs) -> None:
    """Remove the folders ``dirs`` (deepest first) that are still empty."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return


def run_batch(inputs: Iterable[str | os.PathLike], out_dir, *, formats=("csv",), params: dict | None = None,
              spacing_mm=None, deidentify: bool = False, workers: int | None = None,
              scheduler: str | None = None, timeout: float | None = None, force: bool = False,
              progress: bool | None = None, error: Callable[[str], None] | None = None,
              command: Any = None, recursive: bool = True) -> BatchResult:
    """Detect on every image under ``inputs``; resumable and fault-isolated.

    Parameters
    ----------
    inputs : iterable of path
        Files and folders (searched recursively, DICOM recognised by content).
    out_dir : path
        Output folder (with ``--scheduler``: a path every dask worker can
        write to, e.g. shared storage).
    formats : iterable of str
        Export formats (the CSVs are always written).
    params : dict, optional
        Detection parameters.
    spacing_mm : float or tuple, optional
        Spacing override for every input.
    deidentify : bool
        Dataset exports without identifiers.
    workers : int, optional
        Local worker processes (default: the core count; 1 runs in this
        process unless ``timeout`` is given, which needs a killable worker).
        Ignored with ``scheduler``.
    scheduler : str, optional
        Address of a running dask.distributed scheduler
        (:mod:`napari_calc.core.distributed`).
    timeout : float, optional
        Seconds one input may take; a worker exceeding it is killed and
        replaced, and the input fails with "timed out after N s". Counted
        from when the worker process is ready, not from its start-up (see
        :data:`WORKER_START_GRACE_S`).
    force : bool
        Recompute inputs whose outputs are complete.
    progress : bool, optional
        Show a tqdm progress bar on stderr (default: when stderr is a
        terminal).
    error : callable(str), optional
        Receives one line per failed input, ``"<path>: <reason>"``, one per
        earlier output copied aside before being replaced, and the line
        saying that the run waits for a first dask worker
        (``"<scheduler>: ..."``) (default: printed on stderr, above the
        progress bar).
    command : JSON-ready object, optional
        The command-line arguments, recorded in the manifest.
    recursive : bool
        Descend into sub-folders.

    Returns
    -------
    BatchResult

    Raises
    ------
    NapariCalcError
        Unusable settings (bad parameters, ``workers < 1``, the scheduler
        unreachable or dask missing) before anything is processed.
    """
    from .detect import DetectionParams
    from .export import _normalize_formats

    t_start = time.perf_counter()
    started = _now()
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    formats = tuple(_normalize_formats(formats)) or ("csv",)
    if "csv" not in formats:
        formats = ("csv",) + formats
    params = dict(params or {})
    unknown = set(params) - set(DetectionParams.__dataclass_fields__)
    if unknown:
        raise InvalidParameterError(f"unknown detection parameter(s): {', '.join(sorted(unknown))}; "
                                    f"valid: {', '.join(DetectionParams.__dataclass_fields__)}")
    DetectionParams(**params).validate()
    if timeout is not None and not (timeout > 0):
        raise InvalidParameterError(f"--timeout must be > 0 seconds, got {timeout}")
    cores = available_cores()
    if workers is None:
        workers = cores
    if int(workers) < 1:
        raise InvalidParameterError(f"--workers must be >= 1, got {workers}")
    workers = int(workers)
    out_dir = Path(out_dir).absolute()
    new_dirs = [d for d in (out_dir, *out_dir.parents) if not d.exists()]  # deepest first
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NapariCalcError(f"cannot create the output folder ({os_reason(exc)})", out_dir)
    try:  # a folder we cannot write in: one line now, not one per image
        probe = tempfile.NamedTemporaryFile(dir=out_dir, prefix=".napari-calc-probe.", suffix=".tmp")
        probe.close()
    except OSError as exc:
        raise NapariCalcError(f"cannot write in the output folder ({os_reason(exc)})", out_dir)

    if error is None:
        def error(line):
            print(f"napari-calc: {printable(line)}", file=sys.stderr)

    key = settings_key(params=params, formats=formats, spacing_mm=spacing_mm, deidentify=deidentify)
    items, problems = collect_inputs(inputs, recursive=recursive)

    dask_backend = None
    if scheduler:
        from . import distributed as _dist

        try:
            dask_backend = _dist.DaskBackend(scheduler, timeout=timeout,  # connects, or raises
                                             notice=lambda m: error(f"{scheduler}: {m}"))
        except BaseException:
            _remove_empty(new_dirs)  # no scheduler: leave no empty output folder behind
            raise
        try:
            n_threads: Any = dask_backend.threads_per_task()
            mode = {"backend": "dask", "scheduler": scheduler, "dask_workers": dask_backend.n_workers(),
                    "threads_per_task": n_threads}
        except BaseException:
            dask_backend.close()
            raise
    else:
        n_threads = threads_per_worker(workers, cores)
        in_process = workers == 1 and timeout is None
        mode = {"backend": "in-process" if in_process else "local processes", "workers": workers,
                "cores": cores, "threads_per_worker": n_threads}

    display = {it.path: it.display or it.path for it in items}
    tasks = [make_task(it, out_dir, formats=formats, params=params, spacing_mm=spacing_mm,
                       deidentify=deidentify, n_threads=n_threads, key=key) for it in items]
    records: dict[str, dict] = {}
    order: list[str] = []
    result = BatchResult(records=[], min_score=float(DetectionParams(**(params or {})).min_score))
    for arg, reason in problems:
        rec = {"input": arg, "stem": None, "status": "failed", "reason": reason, "outputs": {},
               "seconds": 0.0}
        records[f"arg:{arg}"] = rec
        order.append(f"arg:{arg}")
        error(f"{arg}: {reason}")
        result.n_failed += 1

    todo: list[dict] = []
    for t in tasks:
        rec = {"input": t["path"], "stem": t["stem"], "status": "pending", "reason": None,
               "outputs": {}, "seconds": None}
        marker = None if force else is_complete(t)
        before = None if force or marker is not None else other_input(t)
        if before is not None:
            rec.update(status="failed", seconds=0.0,
                       reason=f"{out_dir / t['stem']}.* hold the outputs of another input, {before}; "
                              f"use another --out, or --force to replace them")
            result.n_failed += 1
            error(f"{display.get(t['path'], t['path'])}: {rec['reason']}")
        elif marker is not None:
            rec.update(status="skipped", reason="outputs complete from an earlier run",
                       outputs=marker["outputs"], n_calcifications=marker.get("n_calcifications"),
                       n_clusters=marker.get("n_clusters"), seconds=0.0)
            result.n_skipped += 1
            result.n_calcifications += int(marker.get("n_calcifications") or 0)
            result.n_clusters += int(marker.get("n_clusters") or 0)
            _add_likely(result, marker)
        else:
            todo.append(t)
        records[t["path"]] = rec
        order.append(t["path"])
    _clean_temporaries(out_dir, [t["stem"] for t in todo])

    manifest_path = out_dir / MANIFEST_NAME
    result.manifest = manifest_path
    head = {
        "format": "napari-calc run manifest",
        "version": 1,
        "started": started,
        "command": command,
        "versions": versions(),
        "parameters": {
            "detection": dataclasses.asdict(DetectionParams(**params)),
            "detection_overrides": params,
            "spacing_mm": spacing_mm,
            "formats": list(formats),
            "deidentify": bool(deidentify),
            "settings_key": key,
            "force": bool(force),
            "timeout_s": timeout,
            "recursive": recursive,
            **mode,
        },
        "out_dir": str(out_dir),
        "inputs_given": [os.fspath(a) for a in inputs],
    }
    if dask_backend is not None:
        head["versions"]["dask"] = dask_backend.dask_version

    def write_manifest(finished: bool) -> None:
        doc = dict(head)
        doc["finished"] = _now() if finished else None
        doc["wall_seconds"] = round(time.perf_counter() - t_start, 3)
        doc["totals"] = {"images": len(tasks) + len(problems), "done": result.n_done,
                         "skipped": result.n_skipped, "failed": result.n_failed,
                         "pending": sum(1 for r in records.values() if r["status"] == "pending"),
                         "calcifications": result.n_calcifications, "clusters": result.n_clusters,
                         "min_score": result.min_score,
                         "calcifications_at_min_score": result.n_likely,
                         "clusters_at_min_score": result.n_likely_clusters}
        doc["inputs"] = [records[k] for k in order]
        try:
            atomic_write_text(manifest_path, json.dumps(doc, indent=1, default=str) + "\n")
        except OSError as exc:
            error(f"{manifest_path}: cannot write the run manifest ({exc.strerror or exc})")

    write_manifest(False)
    last_write = time.monotonic()

    bar = None
    if progress is None:
        progress = sys.stderr.isatty()
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="img", file=sys.stderr, dynamic_ncols=True,
                   desc="napari-calc detect", smoothing=0.1)
        user_error = error

        def error(line):  # keep each error on a line of its own above the bar
            with bar.external_write_mode(file=sys.stderr):
                user_error(line)

    if dask_backend is not None:
        results = dask_backend.map_unordered(todo)
    elif not todo:
        results = iter(())
    elif in_process:
        results = _serial(todo)
    else:
        results = LocalPool(min(workers, len(todo)), timeout=timeout).map_unordered(todo)

    def stopped_at() -> str:
        n_finished = result.n_done + result.n_skipped + result.n_failed
        again = "without --force" if force else "again"  # --force would redo the finished ones
        return (f"{n_finished} of {counted(len(tasks) + len(problems), 'input')} finished, their outputs "
                f"kept in {out_dir}; run the same command {again} to do the rest")

    def finished_meanwhile() -> None:
        """Inputs still pending whose marker (written last) is complete: they
        finished as the run stopped, before their result came back."""
        for t in todo:
            rec = records[t["path"]]
            if rec["status"] != "pending" or _marker_identity(t) in (None, complete_before.get(t["path"])):
                continue  # (with --force, the marker of an earlier run, untouched, says nothing of this one)
            marker = is_complete(t)
            if marker is None:
                continue
            rec.update(status="done", reason=None, outputs=marker["outputs"],
                       n_calcifications=marker.get("n_calcifications"), n_clusters=marker.get("n_clusters"))
            result.n_done += 1
            result.n_calcifications += int(marker.get("n_calcifications") or 0)
            result.n_clusters += int(marker.get("n_clusters") or 0)
            _add_likely(result, marker)

    complete_before = {t["path"]: _marker_identity(t) for t in todo if is_complete(t)} if force else {}
    interrupted = False
    stop: BaseException | None = None
    try:
        for res in results:
            rec = records[res["path"]]
            rec["seconds"] = res.get("seconds")
            if res["status"] == "done":
                rec.update(status="done", reason=None, outputs=res["outputs"],
                           n_calcifications=res["n_calcifications"], n_clusters=res["n_clusters"],
                           detect_seconds=res.get("detect_seconds"))
                for name, k in (res.get("kept") or {}).items():
                    rec.setdefault("kept", {})[name] = k
                    error(f"{display.get(res['path'], res['path'])}: {name} {k['why']}: kept as "
                          f"{k['kept_as']} before writing the new outputs")
                result.n_done += 1
                result.n_calcifications += res["n_calcifications"]
                result.n_clusters += res["n_clusters"]
                _add_likely(result, res)
            else:
                rec.update(status="failed", reason=res.get("reason") or "failed")
                result.n_failed += 1
                error(f"{display.get(res['path'], res['path'])}: {rec['reason']}")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(failed=result.n_failed, refresh=False)
            if time.monotonic() - last_write > MANIFEST_INTERVAL_S:
                write_manifest(False)
                last_write = time.monotonic()
    except KeyboardInterrupt as exc:  # Ctrl-C, or a stop signal the CLI turned into one
        interrupted, stop = getattr(exc, "name", None) or "SIGINT", exc
        raise
    except NapariCalcError as exc:  # the backend cannot go on (the dask scheduler went away)
        interrupted, stop = exc.reason, exc
        raise
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()
        if dask_backend is not None:
            dask_backend.close()
        if bar is not None:
            bar.close()
        if interrupted:
            if dask_backend is None:
                # the stopped workers' unfinished writes (dask workers may still be writing)
                _clean_temporaries(out_dir, [t["stem"] for t in todo])
            finished_meanwhile()
            if isinstance(stop, NapariCalcError):
                stop.reason = f"{stop.reason}; {stopped_at()}"
            else:
                stop.progress = stopped_at()
        result.wall_seconds = time.perf_counter() - t_start
        result.records = [records[k] for k in order]
        head["interrupted"] = bool(interrupted)
        if interrupted:
            head["interrupted_by"] = interrupted
        write_manifest(not interrupted)
    return result


def _main_stdin() -> int:  # pragma: no cover - used by distributed._process_with_timeout
    """``python -m napari_calc.core.batch``: one task (JSON on stdin) -> result (JSON line on stdout).

    Imports :data:`WORKER_PRELOAD` first, then prints :data:`READY_LINE`:
    the caller's timeout starts there, not with the interpreter.
    """
    import importlib

    for name in WORKER_PRELOAD:
        importlib.import_module(name)
    print(READY_LINE, flush=True)
    task = json.loads(sys.stdin.read())
    print(json.dumps(process_input(task)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main_stdin())
