"""``--scheduler``: batch detection on a real dask.distributed cluster (issue 8).

A LocalCluster with worker processes, and a scheduler + worker started as
separate processes on 127.0.0.1 like a user would (``dask scheduler`` /
``dask worker``). The outputs must be identical to a local run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from napari_calc.cli import main  # noqa: E402
from napari_calc.core.batch import MANIFEST_NAME, run_batch  # noqa: E402
from napari_calc.core.errors import NapariCalcError  # noqa: E402

from test_batch_support import csv_files, data_files, make_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask_in")
    make_dataset(root, 3)
    (root / "corrupt.dcm").write_text("not DICOM at all\n")
    local = tmp_path_factory.mktemp("dask_local")
    res = run_batch([root], local, workers=1, formats=("csv", "json"))
    assert res.n_done == 3 and res.n_failed == 1
    return root, local


def _statuses(out):
    m = json.loads((Path(out) / MANIFEST_NAME).read_text())
    return {Path(r["input"]).name: r["status"] for r in m["inputs"]}, m


def test_local_cluster_identical_to_local_run(dataset, tmp_path, capsys):
    root, local = dataset
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                      host="127.0.0.1") as cluster:
        out = tmp_path / "cluster"
        rc = main(["detect", str(root), "--out", str(out), "--scheduler", cluster.scheduler_address,
                   "--formats", "csv,json", "--no-progress"])
        cap = capsys.readouterr()
        assert rc == 1
        (line,) = cap.err.splitlines()
        assert "corrupt.dcm: " in line and "not recognised" in line
        st, m = _statuses(out)
        assert st == {"img0.tif": "done", "img1.tif": "done", "img2.tif": "done", "corrupt.dcm": "failed"}
        assert m["parameters"]["backend"] == "dask" and m["parameters"]["dask_workers"] == 2
        assert "dask" in m["versions"]
        assert len(csv_files(out)) == 6
        assert data_files(out) == data_files(local)  # CSVs, JSON and markers, byte for byte

        # resume works the same through the cluster; --force recomputes
        rc = main(["detect", str(root), "--out", str(out), "--scheduler", cluster.scheduler_address,
                   "--formats", "csv,json", "--no-progress"])
        assert rc == 1
        st, _ = _statuses(out)
        assert [st[f"img{i}.tif"] for i in range(3)] == ["skipped"] * 3
        assert "(3 already complete, skipped)" in capsys.readouterr().out

        res = run_batch([root / "img0.tif"], out, scheduler=cluster.scheduler_address,
                        formats=("csv", "json"), force=True, progress=False, timeout=120)
        assert res.n_done == 1 and res.exit_code == 0  # the --timeout path (a child per input)
        assert data_files(out) == data_files(local)


def _wait_for(path: Path, proc, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        time.sleep(0.1)
    raise TimeoutError(path)


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def scheduler_and_worker(tmp_path):
    """``dask scheduler`` and ``dask worker`` as processes on 127.0.0.1."""
    with _dask_processes(tmp_path) as (address, sched_file, _):
        yield address, sched_file


@contextlib.contextmanager
def _dask_processes(tmp_path):
    """``(address, scheduler file, [scheduler, worker] processes)``, a worker joined."""
    sched_file = tmp_path / "scheduler.json"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(tmp_path / "dask.log", "w")
    procs = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--scheduler-file", str(sched_file), "--no-dashboard"],
            env=env, stdout=log, stderr=subprocess.STDOUT))
        _wait_for(sched_file, procs[0])
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(sched_file),
             "--nthreads", "1", "--nworkers", "1", "--no-dashboard", "--host", "127.0.0.1"],
            env=env, stdout=log, stderr=subprocess.STDOUT))
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        with distributed.Client(address, timeout=30, set_as_default=False) as c:
            c.wait_for_workers(1, timeout=60)  # ready, as a user's cluster would be
        yield address, sched_file, procs
    finally:
        for p in reversed(procs):
            _stop(p)
        log.close()
    assert all(p.poll() is not None for p in procs)


def test_subprocess_scheduler_and_worker(dataset, tmp_path, scheduler_and_worker, capsys):
    root, local = dataset
    address, sched_file = scheduler_and_worker
    out = tmp_path / "remote"
    rc = main(["detect", str(root), "--out", str(out), "--scheduler", address,
               "--formats", "csv,json", "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 1 and len(cap.err.splitlines()) == 1 and "corrupt.dcm" in cap.err
    assert csv_files(out) == csv_files(local)
    assert data_files(out) == data_files(local)
    # a scheduler file works as the address too
    out2 = tmp_path / "remote2"
    assert main(["detect", str(root / "img1.tif"), "--out", str(out2), "--scheduler", str(sched_file),
                 "--no-progress"]) == 0
    assert csv_files(out2) == {k: v for k, v in csv_files(local).items() if k.startswith("img1.")}


def test_a_lost_scheduler_stops_the_run_in_one_line(tmp_path):
    """The scheduler going away mid-run gave one "dask task failed
    (FutureCancelledError: ... scheduler-connection-lost ...)" line per input
    left (and recorded them failed). It now stops the run in one line; the
    inputs left stay pending in the manifest, and a rerun does them."""
    inp, out = tmp_path / "in", tmp_path / "out"
    make_dataset(inp, 24)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with _dask_processes(tmp_path) as (address, _, (scheduler, _)):
        proc = subprocess.Popen([sys.executable, "-m", "napari_calc", "detect", str(inp), "--out", str(out),
                                 "--scheduler", address, "--formats", "csv,json,sr.dcm", "--no-progress"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                if out.is_dir() and len(list(out.glob("*.done.json"))) >= 2:
                    break
                time.sleep(0.005)
            scheduler.terminate()
            err = proc.communicate(timeout=120)[1]
        finally:
            proc.kill()
    (line,) = err.splitlines()
    assert proc.returncode == 1, err
    assert line.startswith(f"napari-calc: {address}: lost the connection to the dask scheduler; ")
    assert "of 24 inputs finished" in line and "run the same command again" in line
    st, m = _statuses(out)
    assert m["interrupted"] is True and m["finished"] is None
    assert m["interrupted_by"] == "lost the connection to the dask scheduler"
    assert set(st.values()) == {"done", "pending"} and 1 <= m["totals"]["done"] < 24
    assert main(["detect", str(inp), "--out", str(out), "--workers", "2", "--formats", "csv,json,sr.dcm",
                 "--no-progress"]) == 0
    st, _ = _statuses(out)
    assert set(st.values()) <= {"done", "skipped"} and len(st) == 24


def test_unreachable_scheduler_one_line(tmp_path, capsys, monkeypatch):
    import napari_calc.core.distributed as d

    monkeypatch.setattr(d, "CONNECT_TIMEOUT_S", 2)
    make_dataset(tmp_path / "in", 1)
    rc = main(["detect", str(tmp_path / "in"), "--out", str(tmp_path / "o"),
               "--scheduler", "tcp://127.0.0.1:9"])
    (line,) = capsys.readouterr().err.splitlines()
    assert rc != 0 and "tcp://127.0.0.1:9" in line and "cannot connect to the dask scheduler" in line
    assert not (tmp_path / "o").exists()  # no empty output folder left behind
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "x.txt").write_text("earlier")
    rc = main(["detect", str(tmp_path / "in"), "--out", str(tmp_path / "kept" / "a" / "b"),
               "--scheduler", "tcp://127.0.0.1:9"])
    assert rc != 0 and sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["x.txt"]


def test_bad_scheduler_files_are_one_line(tmp_path, capsys):
    """A missing scheduler file waited 40 s and blamed a port number; a file
    that is not one ended in a 46-line traceback."""
    make_dataset(tmp_path / "in", 1)
    (tmp_path / "empty.json").write_text("{}")
    (tmp_path / "text.json").write_text("not json")
    for sched, why in ((tmp_path / "missing" / "s.json", "no such scheduler file"),
                       (tmp_path / "empty.json", "not a dask scheduler file"),
                       (tmp_path / "text.json", "not a dask scheduler file")):
        rc = main(["detect", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--scheduler", str(sched)])
        (line,) = capsys.readouterr().err.splitlines()
        assert rc != 0 and line.startswith(f"napari-calc: {sched}: {why}")
    assert not (tmp_path / "o").exists()


def test_dask_missing_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails
    make_dataset(tmp_path / "in", 1)
    rc = main(["detect", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--scheduler", "tcp://127.0.0.1:1"])
    (line,) = capsys.readouterr().err.splitlines()
    assert rc != 0 and "pip install 'napari-calc[distributed]'" in line
    with pytest.raises(NapariCalcError):
        run_batch([tmp_path / "in"], tmp_path / "o", scheduler="tcp://127.0.0.1:1")



# ------------------------------------------------------------------ bad addresses, no workers

def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clients(monkeypatch):
    """Every ``distributed.Client`` made during the test (kept alive, so that
    one left open cannot be closed by its ``__del__`` before it is looked at)."""
    made = []
    init = distributed.Client.__init__

    def recording_init(self, *args, **kwargs):
        made.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(distributed.Client, "__init__", recording_init)
    yield made
    for c in made:  # whatever the test found, leave nothing running
        try:
            c.close(timeout=5)
        except Exception:
            pass


def _left_open(clients):
    return [c for c in clients if c.status not in ("closed", "newly-created")]


def test_bad_addresses_are_one_line_and_prompt(tmp_path, capsys, monkeypatch, clients):
    """An unknown scheme or a garbage address left a half-built client that
    made the process wait 40 s at exit and print dask's ``Client.__del__``
    traceback; a refused port or an unknown host waited the full 20 s connect
    timeout for "Timed out"; ``:abc`` was a bare ``int()`` error."""
    import napari_calc.core.distributed as d

    monkeypatch.setattr(d, "REFUSED_RETRY_S", 0.3, raising=False)
    make_dataset(tmp_path / "in", 1)
    port = _free_port()
    for address, why in (("http://127.0.0.1:8786", "unknown address scheme 'http'"),
                         ("foo", "missing port number"),
                         ("tcp://127.0.0.1:abc", "give tcp://HOST:PORT"),
                         ("tcp://127.0.0.1:99999", "port 99999 is out of range"),
                         (f"tcp://127.0.0.1:{port}",
                          f"connection refused: no scheduler is listening on port {port}"),
                         ("tcp://nosuchhost.invalid:8786", "unknown host 'nosuchhost.invalid'")):
        t0 = time.monotonic()
        rc = main(["detect", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--scheduler", address])
        seconds = time.monotonic() - t0
        (line,) = capsys.readouterr().err.splitlines()
        assert rc == 1 and line.startswith(f"napari-calc: {address}: cannot connect to the dask scheduler (")
        assert why in line, line
        assert seconds < 10, (address, seconds)
        assert not _left_open(clients), address
        assert not (tmp_path / "o").exists()


def test_bad_scheme_exits_promptly_without_traceback(tmp_path):
    """The user's view of the above: the process itself, until it has exited."""
    make_dataset(tmp_path / "in", 1)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "napari_calc", "detect", str(tmp_path / "in"), "--out",
                               str(tmp_path / "o"), "--scheduler", "http://127.0.0.1:8786"],
                              env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("still running 30 s after a wrong --scheduler scheme")
    assert time.monotonic() - t0 < 20
    (line,) = proc.stderr.splitlines()
    assert proc.returncode == 1 and "unknown address scheme 'http'" in line
    assert not (tmp_path / "o").exists()


@pytest.fixture
def silent_port():
    """``tcp://127.0.0.1:PORT`` where connections are accepted and never
    answered (like a port of another program)."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)  # the kernel completes the handshake; nobody ever reads
    try:
        yield f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        srv.close()


def test_port_that_is_not_a_scheduler_gives_up(tmp_path, silent_port):
    """dask connected and waited forever for the scheduler's handshake."""
    make_dataset(tmp_path / "in", 1)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    script = ("import sys; import napari_calc.core.distributed as d; d.HANDSHAKE_TIMEOUT_S = 1.5\n"
              "from napari_calc.cli import main; sys.exit(main(sys.argv[1:]))")
    try:
        proc = subprocess.run([sys.executable, "-c", script, "detect", str(tmp_path / "in"), "--out",
                               str(tmp_path / "o"), "--scheduler", silent_port],
                              env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("still waiting 30 s for a port where no dask scheduler answers")
    (line,) = proc.stderr.splitlines()
    assert proc.returncode == 1 and line.startswith(f"napari-calc: {silent_port}: cannot connect")
    assert "no answer to dask's handshake within 1.5 s" in line
    assert not (tmp_path / "o").exists()


@pytest.fixture
def scheduler_without_workers():
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=True, dashboard_address=None, host="127.0.0.1") as cluster:
        yield cluster.scheduler_address


def test_no_worker_wait_is_told_and_clean(tmp_path, capsys, monkeypatch, clients, scheduler_without_workers):
    """The wait for a first worker was silent (a minute with no output)."""
    import napari_calc.core.distributed as d

    address = scheduler_without_workers
    monkeypatch.setattr(d, "WORKER_WAIT_S", 1)
    monkeypatch.setattr(d, "WORKER_NOTICE_S", 0, raising=False)
    make_dataset(tmp_path / "in", 1)
    rc = main(["detect", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--scheduler", address])
    notice, line = capsys.readouterr().err.splitlines()
    assert notice == (f"napari-calc: {address}: no dask worker has joined the scheduler yet; "
                      f"waiting up to 1 s for one (Ctrl-C to stop)")
    assert rc == 1 and line == (f"napari-calc: {address}: no dask worker joined the scheduler within 1 s "
                                f"(start some with: dask worker {address})")
    assert not _left_open(clients) and not (tmp_path / "o").exists()

    # Ctrl-C during the wait: "interrupted", the client closed, no folder left
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed.Client, "wait_for_workers", interrupted)
    rc = main(["detect", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--scheduler", address])
    assert rc == 130 and capsys.readouterr().err.splitlines()[-1] == "napari-calc: interrupted"
    assert len(clients) == 2 and not _left_open(clients) and not (tmp_path / "o").exists()


# ------------------------------------------------------------------ dask's own log lines

_LOGS_DURING_RUN = """
import logging, sys
import distributed
from napari_calc.cli import main

result = distributed.Future.result

def result_after_a_lost_worker(self, *args, **kwargs):
    # what dask logs when a finished task's worker died before its result was fetched
    logging.getLogger("distributed.client").warning("Couldn't gather 1 keys, rescheduling ('x',)")
    logging.getLogger("distributed.comm.tcp").info("Connection from tcp://127.0.0.1:1 closed")
    logging.getLogger("tornado.application").error("Exception in callback")
    return result(self, *args, **kwargs)

distributed.Future.result = result_after_a_lost_worker
levels = {n: logging.getLogger(n).level for n in ("distributed", "distributed.client", "tornado.application")}
rc = main(sys.argv[1:])
assert {n: logging.getLogger(n).level for n in levels} == levels, "log levels not restored"
logging.getLogger("distributed.client").warning("after the run")
sys.exit(rc)
"""


def test_dask_log_lines_stay_off_stderr(dataset, tmp_path, scheduler_and_worker, monkeypatch):
    """dask's "Couldn't gather ..." (a lost worker) and the like reached the
    user's terminal between napari-calc's lines; they are quiet during the
    run unless the user configured dask's logging, and restored after it."""
    import logging

    import napari_calc.core.distributed as d

    root, _ = dataset
    address, _ = scheduler_and_worker
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env = {k: v for k, v in env.items() if not k.startswith("DASK_LOGGING")}
    proc = subprocess.run([sys.executable, "-c", _LOGS_DURING_RUN, "detect", str(root / "img0.tif"),
                           str(root / "corrupt.dcm"), "--out", str(tmp_path / "o"), "--scheduler", address,
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1 and len(lines) == 2, proc.stderr
    assert lines[0].startswith("napari-calc: ") and "corrupt.dcm: " in lines[0]
    assert "distributed.client - WARNING - after the run" in lines[1]  # dask's logging is back

    # in-process: quiet while connected, back after close; left alone when configured
    watched = ("distributed", "distributed.client", "distributed.comm.tcp", "tornado.application")
    before = {n: logging.getLogger(n).getEffectiveLevel() for n in watched}
    backend = d.DaskBackend(address)
    try:
        assert not any(logging.getLogger(n).isEnabledFor(logging.ERROR) for n in watched)
    finally:
        backend.close()
    assert {n: logging.getLogger(n).getEffectiveLevel() for n in watched} == before
    import dask

    with dask.config.set({"logging": {"distributed": "info"}}):
        backend = d.DaskBackend(address)
        try:
            assert {n: logging.getLogger(n).getEffectiveLevel() for n in watched} == before
        finally:
            backend.close()


# ------------------------------------------------------------------ --timeout through dask

_SITECUSTOMIZE = """
import os, sys, time
if os.environ.get("NC_TEST_START_DELAY"):  # a slow interpreter start (imports over NFS...)
    time.sleep(float(os.environ["NC_TEST_START_DELAY"]))
if os.environ.get("NC_TEST_HANG_ON"):  # an input whose reading never ends
    def _hang(event, args, path=os.environ["NC_TEST_HANG_ON"]):
        if event == "open" and args and str(args[0]) == path:
            time.sleep(3600)
    sys.addaudithook(_hang)
"""


def test_timeout_counts_from_a_ready_child(tmp_path, monkeypatch):
    """With --timeout each input runs in a child interpreter on the dask
    worker; its start-up counted in the timeout, so a short timeout failed
    inputs that are fast. The child now says when it is ready."""
    import napari_calc.core.batch as b
    from napari_calc.core.batch import collect_inputs, make_task
    from napari_calc.core.distributed import _process_with_timeout

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(REPO),
                                                      os.environ.get("PYTHONPATH", "")]))
    make_dataset(tmp_path / "in", 2)
    items, _ = collect_inputs([tmp_path / "in"])
    tasks = [make_task(it, tmp_path / "o", formats=("csv",), params={}, spacing_mm=None, deidentify=False,
                       n_threads=1) for it in items]
    (tmp_path / "o").mkdir()

    # 2 s to start, well under 1.5 s to process: done
    monkeypatch.setenv("NC_TEST_START_DELAY", "2")
    res = _process_with_timeout(tasks[0], 1.5)
    assert res["status"] == "done", res
    assert (tmp_path / "o" / "img0.done.json").is_file()

    # an input that takes longer still times out, counted from the ready child
    monkeypatch.delenv("NC_TEST_START_DELAY")
    monkeypatch.setenv("NC_TEST_HANG_ON", tasks[1]["path"])
    t0 = time.monotonic()
    res = _process_with_timeout(tasks[1], 0.5)
    assert res["status"] == "failed" and res["reason"] == "timed out after 0.5 s", res
    assert 0.5 <= res["seconds"] < 1.5 and time.monotonic() - t0 < 10
    assert not (tmp_path / "o" / "img1.done.json").exists()

    # a child that never gets ready fails after the start-up grace, not never
    monkeypatch.setattr(b, "WORKER_START_GRACE_S", 1.0)
    monkeypatch.setenv("NC_TEST_START_DELAY", "30")
    t0 = time.monotonic()
    res = _process_with_timeout(tasks[1], 60)
    assert res["status"] == "failed" and res["reason"] == "worker subprocess did not start within 1 s", res
    assert time.monotonic() - t0 < 10
