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
