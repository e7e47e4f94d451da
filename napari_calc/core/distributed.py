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
from collections.abc import Callable, Iterable, Iterator

from .errors import NapariCalcError

__all__ = ["DaskBackend", "SchedulerLost", "INSTALL_HINT"]

#: What to install when dask is missing.
INSTALL_HINT = "pip install 'napari-calc[distributed]'"

#: Seconds to wait for the scheduler, and for at least one worker.
CONNECT_TIMEOUT_S = 20
WORKER_WAIT_S = 60
#: Seconds without a worker after which the user is told that the run waits
#: for one (workers started at the same moment usually join before).
WORKER_NOTICE_S = 5
#: Seconds the client's whole start-up (connection and dask's handshake)
#: may take.
HANDSHAKE_TIMEOUT_S = 25
#: Seconds a refused connection is retried (a scheduler that is just
#: starting) before "connection refused" is the answer.
REFUSED_RETRY_S = 3.0

#: Loggers kept quiet (below CRITICAL) during a run, with their children:
#: dask's, and tornado's, whose event loop dask runs on (see :class:`_QuietLogs`).
QUIET_LOGGERS = ("distributed", "tornado")

#: Address schemes that run over TCP, whose host and port are checked
#: before dask is asked to connect.
TCP_SCHEMES = ("tcp", "tls", "ws", "wss")


def _host_info() -> tuple[str, int]:
    """(hostname, usable cores) of the machine a dask worker runs on."""
    from .batch import available_cores

    return socket.gethostname(), available_cores()


def _process_with_timeout(task: dict, timeout: float) -> dict:
    """Run one task in a child interpreter that is killed after ``timeout`` s.

    dask cannot interrupt a running task, so with a per-file timeout each
    input is processed by ``python -m napari_calc.core.batch`` on the worker.
    The timeout counts from the child's ready line
    (:data:`~napari_calc.core.batch.READY_LINE`, printed once napari-calc and
    numpy are imported), as for the local pool: a start-up slower than a
    short timeout (an import from a network file system) does not fail an
    input that is fast. The start-up itself may take
    :data:`~napari_calc.core.batch.WORKER_START_GRACE_S`.

    Parameters
    ----------
    task : dict
        From :func:`napari_calc.core.batch.make_task`.
    timeout : float
        Seconds the input may take once the child is ready.

    Returns
    -------
    dict
        The result of :func:`napari_calc.core.batch.process_input`, or a
        failure (``timed out after N s``, the child's death, or a child that
        did not start).
    """
    import json
    import queue
    import subprocess
    import sys
    import threading
    import time

    from .batch import READY_LINE, WORKER_START_GRACE_S, _death_reason

    t0 = time.perf_counter()

    def failed(reason: str) -> dict:
        return {"path": task["path"], "stem": task["stem"], "status": "failed", "reason": reason,
                "seconds": round(time.perf_counter() - t0, 4)}

    proc = subprocess.Popen([sys.executable, "-m", "napari_calc.core.batch"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:  # the child's stdout, line by line; None at its end
        try:
            for line in proc.stdout:
                lines.put(line)
        except (OSError, ValueError):  # pragma: no cover
            pass
        finally:
            lines.put(None)
            proc.stdout.close()

    threading.Thread(target=pump, daemon=True, name="napari-calc-child-stdout").start()

    def wait_line(deadline: float):
        try:
            return lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError from None

    try:
        start_by = time.monotonic() + WORKER_START_GRACE_S
        try:
            while (line := wait_line(start_by)) is not None and line.strip() != READY_LINE:
                pass  # something printed while importing
        except TimeoutError:
            return failed(f"worker subprocess did not start within {WORKER_START_GRACE_S:g} s")
        if line is not None:
            t0 = time.perf_counter()  # the timeout and the seconds count from here
            try:
                proc.stdin.write(json.dumps(task))
                proc.stdin.close()
            except OSError:  # it died meanwhile
                pass
            deadline = time.monotonic() + timeout
            last = None
            try:
                while (line := wait_line(deadline)) is not None:
                    last = line
            except TimeoutError:
                return failed(f"timed out after {timeout:g} s")
            returncode = proc.wait()
            if returncode == 0 and last is not None:
                try:
                    return json.loads(last)
                except ValueError:
                    pass
        else:
            returncode = proc.wait()
        return failed(_death_reason(returncode) if returncode else "worker subprocess gave no result")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        try:
            proc.stdin.close()
        except OSError:  # a broken pipe: nothing more to tell it
            pass


def _scheduler_file_address(path: str) -> str:
    """The scheduler address in the dask scheduler file ``path`` (JSON with
    an ``address``): dask failed on another file with a long traceback."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise NapariCalcError(f"not a dask scheduler file ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())})", path) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("address"), str):
        raise NapariCalcError("not a dask scheduler file (no \"address\" in it)", path)
    return doc["address"]


def _unreachable(address: str, timeout: float) -> str | None:
    """Why nothing can answer at the TCP ``address``, or None if something may.

    dask retries an unknown host or a refused connection until its connect
    timeout, then says only "Timed out"; an unparsable address ended in a
    bare ``int()`` error. This finds those at once (a refused connection is
    retried for :data:`REFUSED_RETRY_S`, in case the scheduler is just
    starting; the scheduler logs the probe at INFO level as a connection
    "closed before handshake completed"). Addresses of other schemes
    (``inproc``, ``ucx``...) are left to dask.

    Parameters
    ----------
    address : str
        ``tcp://HOST:PORT`` (or ``HOST:PORT``, ``tls://``, ``ws://``, ``wss://``).
    timeout : float
        Seconds to wait for an answer.

    Returns
    -------
    str or None
        The reason, one line; None when a TCP connection was accepted (or
        the scheme is not one of :data:`TCP_SCHEMES`).
    """
    import time

    from distributed.comm import get_address_host_port, parse_address

    try:
        scheme, _ = parse_address(address)
        if scheme not in TCP_SCHEMES:
            return None
        host, port = get_address_host_port(address)
    except (ValueError, TypeError) as exc:
        return f"not an address: {' '.join(str(exc).split())}; give tcp://HOST:PORT or a scheduler file"
    if not 0 < port < 65536:
        return f"port {port} is out of range (1-65535)"
    try:
        socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        return f"unknown host {host!r} ({' '.join(str(getattr(exc, 'strerror', None) or exc).split())})"
    give_up = time.monotonic() + min(REFUSED_RETRY_S, timeout)
    while True:
        try:
            socket.create_connection((host or None, port), timeout=timeout).close()
            return None
        except ConnectionRefusedError:
            if time.monotonic() >= give_up:
                return (f"connection refused: no scheduler is listening on port {port} "
                        f"of {host or 'localhost'}")
            time.sleep(0.2)
        except socket.timeout:
            return f"no answer from {host}:{port} within {timeout:g} s"
        except OSError as exc:
            from .errors import os_reason

            return f"{os_reason(exc)} ({host}:{port})"


def _connect(distributed, kw: dict):
    """A connected ``distributed.Client``; a failed one is closed, not left behind.

    When ``Client(...)`` raises (an unknown address scheme, a missing port,
    a TLS address without TLS settings, Ctrl-C...) its half-built client
    keeps an event loop; nobody holds it, and at interpreter exit its
    ``__del__`` waited 40 s and printed a traceback. It is closed here.

    The whole start-up is bounded too: a port where something else than a
    dask scheduler listens (e.g. the dashboard's 8787) accepted the
    connection and then never answered dask's handshake, and the client
    waited forever.

    Parameters
    ----------
    distributed : module
        The imported ``distributed`` package.
    kw : dict
        ``address`` or ``scheduler_file``.

    Returns
    -------
    distributed.Client
    """
    import asyncio

    class Client(distributed.Client):  # so named, as dask names clients after their class
        def __init__(self, *args, **kwargs):
            try:
                super().__init__(*args, **kwargs)
            except BaseException:
                try:
                    self.close(timeout=5)
                except Exception:  # pragma: no cover - nothing more to do for it
                    pass
                raise

        async def _start(self, *args, **kwargs):
            try:
                return await asyncio.wait_for(super()._start(*args, **kwargs), HANDSHAKE_TIMEOUT_S)
            except asyncio.TimeoutError:
                raise OSError(f"no answer to dask's handshake within {HANDSHAKE_TIMEOUT_S:g} s; "
                              f"is this the scheduler's port (default 8786)?") from None

    return Client(timeout=CONNECT_TIMEOUT_S, set_as_default=False, **kw)


class SchedulerLost(NapariCalcError):
    """The client lost its dask scheduler during a run: the run stops there
    (every input left would fail alike), and a rerun does the rest."""


def _lost_scheduler(client, exc: BaseException) -> bool:
    """``exc``, raised by a future of ``client``, means the scheduler is gone
    (rather than one task or one worker failing)."""
    if getattr(client, "status", "running") not in ("running", "newly-created"):
        return True
    return "scheduler-connection-lost" in str(exc)


class _QuietLogs:
    """Keeps the client's dask log lines off the terminal while a run is on.

    dask logs to stderr what it copes with itself, such as ``Couldn't
    gather 1 keys, rescheduling`` after a worker was lost, or ``Failed to
    reconnect to scheduler`` when the scheduler went away (each input then
    fails with its own line). A user of the command line sees napari-calc's
    lines only: the loggers of :data:`QUIET_LOGGERS` are raised to CRITICAL
    by :meth:`start` and put back by :meth:`stop`.

    Whoever configured dask's logging (dask's ``logging`` or
    ``logging-file-config`` setting, e.g. ``DASK_LOGGING__DISTRIBUTED=info``
    in the environment) keeps it as configured: nothing is changed then.

    Parameters
    ----------
    dask : module
        The imported ``dask`` package (for its configuration).
    """

    def __init__(self, dask):
        cfg = dask.config.config
        keys = ("logging", "logging-file-config")
        self.configured = any(k in cfg or k in (cfg.get("distributed") or {}) for k in keys)
        self.saved: dict[str, int] = {}

    def start(self) -> None:
        """Raise the dask loggers to CRITICAL (unless the user configured them)."""
        import logging

        if self.configured or self.saved:
            return
        for name in list(logging.Logger.manager.loggerDict):
            lg = logging.Logger.manager.loggerDict[name]
            if not isinstance(lg, logging.Logger):
                continue
            tree = any(name == r or name.startswith(r + ".") for r in QUIET_LOGGERS)
            if tree and (name in QUIET_LOGGERS or lg.level != logging.NOTSET):  # the rest inherit
                self.saved[name] = lg.level
        for root in QUIET_LOGGERS:
            self.saved.setdefault(root, logging.getLogger(root).level)
        for name in self.saved:
            logging.getLogger(name).setLevel(logging.CRITICAL)

    def stop(self) -> None:
        """Put the levels back."""
        import logging

        saved, self.saved = self.saved, {}
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


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
    notice : callable(str), optional
        Told, in one line, when the scheduler still has no worker after
        :data:`WORKER_NOTICE_S` seconds (the wait goes on up to
        :data:`WORKER_WAIT_S` seconds in all).

    Raises
    ------
    NapariCalcError
        dask.distributed is not installed, the scheduler cannot be reached,
        or no worker joins within :data:`WORKER_WAIT_S` seconds. Nothing is
        left open then, nor when the wait is interrupted (Ctrl-C).
    """

    def __init__(self, address: str, *, timeout: float | None = None,
                 notice: Callable[[str], None] | None = None):
        try:
            import dask
            import distributed
        except ImportError:
            raise NapariCalcError(f"--scheduler needs dask.distributed, which is not installed: "
                                  f"{INSTALL_HINT}") from None
        self.dask_version = dask.__version__
        self.address = address
        self.timeout = timeout
        self._logs = _QuietLogs(dask)
        self._logs.start()
        try:
            self._open(distributed, address, notice)
        except BaseException:
            self._logs.stop()
            raise

    def _open(self, distributed, address: str, notice: Callable[[str], None] | None) -> None:
        """Connect to ``address`` and wait for a worker (see the class)."""
        if os.path.isfile(address):
            target = _scheduler_file_address(address)
            kw = {"scheduler_file": address}
        elif "://" not in address and (os.sep in address or address.endswith(".json")):
            raise NapariCalcError("no such scheduler file (give the file 'dask scheduler "
                                  "--scheduler-file' wrote, or an address tcp://HOST:PORT)", address)
        else:
            target = address
            kw = {"address": address}
        why = _unreachable(target, CONNECT_TIMEOUT_S)
        if why:
            raise NapariCalcError(f"cannot connect to the dask scheduler ({why})", address)
        try:
            self.client = _connect(distributed, kw)
        except Exception as exc:  # dask raises many kinds here; each is one line for the user
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise NapariCalcError(f"cannot connect to the dask scheduler ({msg})", address) from None
        try:
            self._wait_for_a_worker(notice)
        except (TimeoutError, OSError):
            self.close()
            raise NapariCalcError(f"no dask worker joined the scheduler within {WORKER_WAIT_S:g} s "
                                  f"(start some with: dask worker {address})", address) from None
        except BaseException:  # Ctrl-C while waiting
            self.close()
            raise

    def _wait_for_a_worker(self, notice: Callable[[str], None] | None) -> None:
        """Return when a worker is connected; after :data:`WORKER_NOTICE_S`
        without one, tell ``notice``; raise TimeoutError after :data:`WORKER_WAIT_S`."""
        first = min(WORKER_NOTICE_S, WORKER_WAIT_S)
        try:
            self.client.wait_for_workers(1, timeout=max(0.01, first))  # 0 would wait forever
            return
        except TimeoutError:
            if first >= WORKER_WAIT_S:
                raise
        if notice is not None:
            notice(f"no dask worker has joined the scheduler yet; waiting up to {WORKER_WAIT_S:g} s "
                   f"for one (Ctrl-C to stop)")
        self.client.wait_for_workers(1, timeout=max(0.01, WORKER_WAIT_S - first))

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
                    if _lost_scheduler(self.client, exc):
                        raise SchedulerLost("lost the connection to the dask scheduler", self.address) from None
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
        """Disconnect (the cluster itself keeps running) and give dask its
        log levels back."""
        try:
            self.client.close()
        except Exception:  # pragma: no cover
            pass
        finally:
            self._logs.stop()
