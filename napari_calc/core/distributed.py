"""Batch detection on a running dask.distributed cluster (``--scheduler``).

The client only ships *paths*: each task is the small dict of
:func:`napari_calc.core.batch.make_task` and every dask worker runs
:func:`napari_calc.core.batch.process_input` on it, reading the image from
storage it shares with the client and writing the outputs and the
completeness marker into the output folder (which must be shared as well).
This is the same function the local runner calls, so the outputs are
identical to a local run.

dask is imported only here, and this module is imported only when a scheduler
is given, so napari-calc works without dask installed.

Starting a cluster (see ``docs/batch.md``)::

    dask scheduler --host 0.0.0.0 --port 8786            # on one machine
    dask worker tcp://SCHEDULER:8786 --nworkers 4 --nthreads 1   # on each machine
    napari-calc detect /shared/data --out /shared/results --scheduler tcp://SCHEDULER:8786

Every worker needs napari-calc installed (the same version as the client)
and the same paths to the data and the output folder.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator

from .errors import NapariCalcError

__all__ = ["DaskBackend", "INSTALL_HINT"]

#: What to install when dask is missing.
INSTALL_HINT = "pip install 'napari-calc[distributed]'"

#: Seconds to wait for the scheduler, and for at least one worker.
CONNECT_TIMEOUT_S = 20
WORKER_WAIT_S = 60


def _host_info() -> tuple[str, int]:
    """(hostname, usable cores) of the machine a dask worker runs on."""
    from .batch import available_cores

    return socket.gethostname(), available_cores()


def _process_with_timeout(task: dict, timeout: float) -> dict:
    """Run one task in a child interpreter that is killed after ``timeout`` s.

    dask cannot interrupt a running task, so with a per-file timeout each
    input is processed by ``python -m napari_calc.core.batch`` on the worker.
    """
    import json
    import subprocess
    import sys
    import time

    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "napari_calc.core.batch"],
                              input=json.dumps(task), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"path": task["path"], "stem": task["stem"], "status": "failed",
                "reason": f"timed out after {timeout:g} s", "seconds": round(time.perf_counter() - t0, 4)}
    if proc.returncode == 0:
        try:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            pass
    from .batch import _death_reason

    return {"path": task["path"], "stem": task["stem"], "status": "failed",
            "reason": _death_reason(proc.returncode) if proc.returncode else "worker subprocess gave no result",
            "seconds": round(time.perf_counter() - t0, 4)}


def _scheduler_file_address(path: str) -> str:
    """``path`` after checking it is a dask scheduler file (JSON with an
    ``address``): dask failed on another file with a long traceback."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise NapariCalcError(f"not a dask scheduler file ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())})", path) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("address"), str):
        raise NapariCalcError("not a dask scheduler file (no \"address\" in it)", path)
    return path


class DaskBackend:
    """A connection to a dask.distributed scheduler running napari-calc tasks.

    Parameters
    ----------
    address : str
        Scheduler address (``tcp://host:8786``) or the path of a scheduler
        file written by ``dask scheduler --scheduler-file``.
    timeout : float, optional
        Per-input timeout in seconds (each input then runs in a child
        process on the worker, see :func:`_process_with_timeout`).

    Raises
    ------
    NapariCalcError
        dask.distributed is not installed, the scheduler cannot be reached,
        or no worker joins within a minute.
    """

    def __init__(self, address: str, *, timeout: float | None = None):
        try:
            import dask
            import distributed
        except ImportError:
            raise NapariCalcError(f"--scheduler needs dask.distributed, which is not installed: "
                                  f"{INSTALL_HINT}") from None
        self.dask_version = dask.__version__
        self.address = address
        self.timeout = timeout
        if os.path.isfile(address):
            kw = {"scheduler_file": _scheduler_file_address(address)}
        elif "://" not in address and (os.sep in address or address.endswith(".json")):
            raise NapariCalcError("no such scheduler file (give the file 'dask scheduler "
                                  "--scheduler-file' wrote, or an address tcp://HOST:PORT)", address)
        else:
            kw = {"address": address}
        try:
            self.client = distributed.Client(timeout=CONNECT_TIMEOUT_S, set_as_default=False, **kw)
        except Exception as exc:  # dask raises many kinds here; each is one line for the user
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise NapariCalcError(f"cannot connect to the dask scheduler ({msg})", address) from None
        try:
            self.client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except (TimeoutError, OSError):
            self.client.close()
            raise NapariCalcError(f"no dask worker joined the scheduler within {WORKER_WAIT_S} s "
                                  f"(start some with: dask worker {address})", address) from None

    def n_workers(self) -> int:
        """Workers currently connected."""
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    def threads_per_task(self) -> dict[str, int]:
        """Kernel threads per task on each host: ``max(1, cores // dask threads on that host)``.

        Returns ``{hostname: n, "*": 1}`` (``"*"`` for hosts that join later).
        """
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        try:
            hosts = self.client.run(_host_info)  # {worker address: (hostname, cores)}
        except Exception as exc:  # napari-calc missing or another version on a worker
            msg = " ".join(str(exc).split())
            raise NapariCalcError(f"the dask workers cannot run napari-calc ({type(exc).__name__}: {msg}); "
                                  f"install the same napari-calc on every worker", self.address) from None
        threads: dict[str, int] = {}
        cores: dict[str, int] = {}
        for addr, (host, n) in hosts.items():
            threads[host] = threads.get(host, 0) + int(info.get(addr, {}).get("nthreads", 1))
            cores[host] = n
        out = {h: max(1, cores[h] // max(1, threads[h])) for h in threads}
        out["*"] = 1
        return out

    def map_unordered(self, tasks: Iterable[dict]) -> Iterator[dict]:
        """Submit every task; yield the results as they complete."""
        from distributed import as_completed

        from .batch import process_input

        tasks = list(tasks)
        if not tasks:
            return
        futures = []
        by_key = {}
        for t in tasks:
            if self.timeout is None:
                f = self.client.submit(process_input, t, pure=False)
            else:
                f = self.client.submit(_process_with_timeout, t, self.timeout, pure=False)
            futures.append(f)
            by_key[f.key] = t
        ac = as_completed(futures, loop=self.client.loop)
        try:
            for fut in ac:
                t = by_key[fut.key]
                try:
                    res = fut.result()
                except Exception as exc:  # the worker died (KilledWorker), or could not run it
                    msg = " ".join(str(exc).split())
                    res = {"path": t["path"], "stem": t["stem"], "status": "failed",
                           "reason": f"dask task failed ({type(exc).__name__}{': ' + msg if msg else ''})",
                           "seconds": None}
                fut.release()
                yield res
        finally:
            pending = [f for f in futures if not f.done()]
            if pending:
                self.client.cancel(pending)

    def close(self) -> None:
        """Disconnect (the cluster itself keeps running)."""
        try:
            self.client.close()
        except Exception:  # pragma: no cover
            pass
