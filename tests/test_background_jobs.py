"""The tests' background jobs (_background.py): a job runs once, niced when
started at collection, its exception reaches the fixture, and a job that
overruns its timeout once asked for has its children killed."""

from __future__ import annotations

import sys
import time

import pytest

import _background as bg


@pytest.fixture
def jobs(monkeypatch):
    monkeypatch.setattr(bg, "JOBS", {})
    runner = bg.Background()
    yield runner
    runner.stop()


def _niceness(run):
    res = run([sys.executable, "-c", "import os; print(os.nice(0))"])
    assert res.returncode == 0, res.stderr
    return int(res.stdout)


def test_started_jobs_run_niced_once_and_others_on_demand(jobs):
    calls = []

    @bg.job("a")
    def a(folder, run):
        calls.append("a")
        assert folder.is_dir()
        return _niceness(run)

    @bg.job("b")
    def b(folder, run):
        calls.append("b")
        return _niceness(run)

    jobs.start(["a", "not_a_job"])
    assert jobs.result("a") == (19 if bg._NICE else 0)
    assert jobs.result("a") == jobs.result("a") and calls == ["a"]
    assert jobs.result("b") == 0  # asked for without a start: run at once, not niced
    assert calls == ["a", "b"]


def test_a_job_error_reaches_the_fixture(jobs):
    @bg.job("bad")
    def bad(folder, run):
        pytest.skip("no compiler here")

    jobs.start(["bad"])
    with pytest.raises(pytest.skip.Exception, match="no compiler here"):
        jobs.result("bad")


#: a child that starts a grandchild (as the compiler driver starts cc1),
#: both holding the output pipes for a minute
_TWO_LEVELS = ("import subprocess, sys, time; "
               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")


def test_timeout_counts_from_the_request_and_kills_the_children(jobs):
    @bg.job("slow", timeout=1.0)
    def slow(folder, run):
        return run([sys.executable, "-c", _TWO_LEVELS])

    jobs.start(["slow"])
    time.sleep(1.5)  # longer than the timeout, before anyone asks: no harm
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match="slow: not done 1 s after its test asked for it"):
        jobs.result("slow")
    assert 0.9 < time.monotonic() - t0 < 10
    # the child and its own child were killed: the job ends at once (with
    # the grandchild left, it would wait on the pipes for the minute)
    done = bg.JOBS["slow"].future.result(timeout=10)
    assert done.returncode != 0
