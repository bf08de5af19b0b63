"""Run ownership across processes: one job per run directory."""
import subprocess
import sys
import time

import pytest

from cotresnet.errors import ConfigError
from cotresnet.rundir.ownership import RunLock, lock_holder
from helpers import SHORT, job_env, train_small

HOLDER = """
import sys, time
from cotresnet.rundir.ownership import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_job_in_a_held_directory_is_refused_with_the_holders_pid(tmp_path, small):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, env=job_env())
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert lock_holder(run) == proc.pid
        with pytest.raises(ConfigError, match=f"in use by process {proc.pid}"):
            train_small(run, *SHORT)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 5
    while lock_holder(run) is not None and time.time() < deadline:
        time.sleep(0.05)
    assert lock_holder(run) is None  # the kernel drops a dead holder's lock: nothing stale
    with RunLock(run):
        pass


ASK = """
import sys
from cotresnet.rundir.ownership import RunLock, lock_holder
try:
    RunLock(sys.argv[1]).acquire()
    print("acquired")
except Exception as e:
    print(type(e).__name__, lock_holder(sys.argv[1]))
"""


def test_asking_about_a_lock_this_process_holds_keeps_it(tmp_path):
    """A sweep's monitor asks about the locks of jobs training in its own process: asking must neither drop
    them (closing any descriptor of the file drops a POSIX lock) nor miss them (F_GETLK never reports the
    asker's own lock); a second lock of the same directory in this process is refused too."""
    import os

    run = tmp_path / "run"
    with RunLock(run):
        for _ in range(3):
            assert lock_holder(run) == os.getpid()
            assert lock_holder(tmp_path / "." / "run") == os.getpid()  # the same directory by another path
        with pytest.raises(ConfigError, match="in use by this process"):
            RunLock(run).acquire()
        other = subprocess.run([sys.executable, "-c", ASK, str(run)], capture_output=True, text=True,
                               env=job_env(), timeout=60)
        assert other.stdout.split() == ["ConfigError", str(os.getpid())], other.stderr[-2000:]
    assert lock_holder(run) is None
