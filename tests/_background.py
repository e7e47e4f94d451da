"""Slow test set-up started at collection, at the lowest CPU priority.

Some fixtures wait on child processes for a long time: the kernel's C
compiled for the sanitizer, serial and AVX2 builds, the sanitizer build's
C tests, and the kernel run under CPU emulation. Run when their tests
came, they added about two minutes to the suite on 2 cores, most of it a
lone compiler on one core. Started as soon as the tests are collected,
their child processes run under ``nice -n 19`` while the earlier tests
run: they take the time that the suite leaves idle (the GUI tests' waits,
other tests' children), and the tests running meanwhile keep the CPU they
ask for. A fixture then takes the job's result, waiting for it if need be
(its children go on at full speed while nothing else runs).

A module registers a job with ``@job("fixture_name")``; conftest.py starts
the jobs whose fixture a selected test uses, and stops them (children
killed, files removed) at the end of the session. A job that was not
started (its tests not selected) starts when its fixture asks for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Callable

_NICE = ["nice", "-n", "19"] if shutil.which("nice") else []


class _Job:
    def __init__(self, fn: Callable, timeout: float | None):
        self.fn, self.timeout = fn, timeout
        self.future: Future | None = None
        self.procs: set[subprocess.Popen] = set()


#: fixture name -> its job
JOBS: dict[str, _Job] = {}


def job(fixture: str, *, timeout: float | None = None):
    """Register ``fn(folder, run)`` as the background job of ``fixture``.

    ``folder`` is a new directory for its files, and ``run(command,
    **popen_args)`` runs a child process as ``subprocess.run(command,
    capture_output=True, text=True)`` would. ``timeout`` (seconds) counts
    from when the fixture asks for the result, not from the start (a niced
    job may wait long for idle CPU before that): then its children are
    killed and the test fails.
    """
    def register(fn):
        JOBS[fixture] = _Job(fn, timeout)
        return fn
    return register


class Background:
    """Runs the jobs: their futures, children and folders."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopped = False
        self._pool: ThreadPoolExecutor | None = None
        self._root: Path | None = None

    def _run(self, jb: _Job, nice: bool, cmd, **kw) -> subprocess.CompletedProcess:
        with self._lock:
            if self._stopped:
                raise RuntimeError("the test session is over")
            # a process group of its own: killing the compiler driver alone
            # would leave its cc1 running, holding the pipes open
            proc = subprocess.Popen([*(_NICE if nice else []), *map(str, cmd)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
            jb.procs.add(proc)
        try:
            out, err = proc.communicate()
        finally:
            with self._lock:
                jb.procs.discard(proc)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def _submit(self, name: str, nice: bool) -> Future:
        jb = JOBS[name]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=len(JOBS), thread_name_prefix="test-background")
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="napari-calc-tests-"))
        folder = Path(tempfile.mkdtemp(prefix=name + "-", dir=self._root))
        jb.future = self._pool.submit(jb.fn, folder, lambda cmd, **kw: self._run(jb, nice, cmd, **kw))
        return jb.future

    def start(self, names) -> None:
        """Start the jobs of these fixtures (names without a job, or
        started already, are passed over)."""
        for name in names:
            if name in JOBS and JOBS[name].future is None:
                self._submit(name, nice=True)

    def result(self, name: str):
        """The job's result (its exception re-raised), started now if it was
        not started at collection."""
        jb = JOBS[name]
        fut = jb.future or self._submit(name, nice=False)
        try:
            return fut.result(timeout=jb.timeout)
        except FutureTimeout:
            self._kill(jb)
            raise AssertionError(f"{name}: not done {jb.timeout:g} s after its test asked for it") from None

    def _kill(self, jb: _Job) -> None:
        with self._lock:
            for proc in jb.procs:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:  # (already gone)
                    pass

    def stop(self) -> None:
        """Kill the children still running, wait for the jobs, remove the
        files."""
        with self._lock:
            self._stopped = True
        for jb in JOBS.values():
            self._kill(jb)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)


BACKGROUND = Background()
