"""A one-node SLURM cluster on 127.0.0.1 for tests and demos (Debian's slurm-wlm and munge).

    python scripts/slurm_local.py start DIR     # prints `export SLURM_CONF=DIR/slurm.conf`
    python scripts/slurm_local.py stop DIR      # stops the daemons it started, by pid

Everything lives in DIR: a generated slurm.conf, a munge key and socket, spool and state
directories, logs and pid files. Nothing touches /etc. Daemons are stopped by the pids recorded
at start, never by name. Use `SlurmCluster` as a context manager from Python.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")


def available() -> str:
    """'' when the binaries are installed, else the reason they are not."""
    missing = [b for b in (*DAEMONS, "sbatch", "squeue", "scontrol") if shutil.which(b) is None]
    return f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)" if missing else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SLURM_CONF = """\
ClusterName=cotresnet
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={d}/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobRequeue=1
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


def _alive(pid: int, proc=None) -> bool:
    if proc is not None:  # our own child: poll() reaps it
        return proc.poll() is None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _terminate(pid: int, proc=None) -> None:
    """SIGTERM, up to 5 s of grace, then SIGKILL; reaps our own children."""
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not _alive(pid, proc):
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        proc.wait()


class SlurmCluster:
    def __init__(self, directory):
        self.dir = Path(directory).resolve()
        self.conf = self.dir / "slurm.conf"
        self._procs = {}

    @property
    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self, timeout: float = 60) -> SlurmCluster:
        reason = available()
        if reason:
            raise RuntimeError(reason)
        d = self.dir
        for sub in ("state", "spool"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
        self.conf.write_text(SLURM_CONF.format(host=socket.gethostname().split(".")[0], d=d, cpus=os.cpu_count(),
                                               mem=mem, ctld_port=_free_port(), d_port=_free_port()))
        self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={d}/munge.socket",
                               f"--key-file={key}", f"--log-file={d}/munged.log", f"--pid-file={d}/munged.pid.own",
                               f"--seed-file={d}/munged.seed"])
        self._wait(lambda: (d / "munge.socket").exists(), timeout, "munged socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        self._wait(self._node_idle, timeout, "the node to become idle")
        return self

    def _spawn(self, name, argv):
        log = open(self.dir / f"{name}.out", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self._procs[name] = proc
        (self.dir / f"{name}.pid.started").write_text(str(proc.pid))

    def _node_idle(self) -> bool:
        r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=self.env)
        return r.returncode == 0 and r.stdout.strip() in ("idle", "mix", "alloc")

    def _wait(self, cond, timeout, what, stop_on_timeout=True):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if cond():
                return
            time.sleep(0.25)
        if not stop_on_timeout:
            return
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(self.dir.glob("*.out")))
        self.stop()
        raise RuntimeError(f"SLURM: timed out waiting for {what}\n{logs}")

    def stop(self) -> None:
        """Stop everything this cluster started: its jobs (scancel), the daemons by the pids start()
        recorded (slurmd, slurmctld, munged), then any process still carrying this cluster's SLURM_CONF in
        its environment (slurmstepd, srun, batch shells a killed slurmd can leave behind), by pid."""
        if self._controller_started():
            subprocess.run(["scancel", "--full", "--quiet", *self._job_ids()], env=self.env, capture_output=True)
            self._wait(lambda: not self._job_ids(), 30, "jobs to end", stop_on_timeout=False)
        for name in reversed(DAEMONS):
            pid_file = self.dir / f"{name}.pid.started"
            if pid_file.exists():
                _terminate(int(pid_file.read_text()), self._procs.pop(name, None))
                pid_file.unlink()
        for pid in self.leftovers():
            _terminate(pid)

    def leftovers(self) -> list:
        """Pids of live processes whose environment names this cluster's slurm.conf."""
        marker = f"SLURM_CONF={self.conf}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if marker in (entry / "environ").read_bytes().split(b"\0") and _alive(int(entry.name)):
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def _job_ids(self) -> list:
        r = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, env=self.env)
        return r.stdout.split() if r.returncode == 0 else []

    def _controller_started(self) -> bool:
        return (self.dir / "slurmctld.pid.started").exists()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("start", "stop"))
    ap.add_argument("directory", type=Path)
    args = ap.parse_args(argv)
    cluster = SlurmCluster(args.directory)
    if args.action == "start":
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
