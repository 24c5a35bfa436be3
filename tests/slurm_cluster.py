"""A real single-node SLURM cluster on localhost, for integration tests.

``with slurm_cluster(tmp_path) as cluster:`` starts munged, slurmctld and slurmd (as
root), waits until the node takes jobs, and on exit cancels the jobs, stops every
daemon it started (by pid, and any job-step daemon that appeared meanwhile) and
removes the config it wrote.

Fixed by SLURM itself, found on these machines:
* the config must be ``/etc/slurm/slurm.conf``: the executor plugin's job step strips
  ``SLURM_*`` variables, so a ``SLURM_CONF`` elsewhere is lost inside jobs. A marker
  line identifies our file; a foreign one is never touched, and an exclusive lock
  (``/etc/slurm/.orthskip-test-cluster.lock``) serialises concurrent test runs;
* the machine's hostname is not ``localhost``, so slurmd runs with ``-N localhost``;
* accounting is off, so ``sacct`` sees no jobs: the test asks the plugin for its
  ``squeue`` status command, which needs finished jobs to stay visible
  (``MinJobAge=300`` here, above the plugin's threshold of 3 × its first check delay);
* a requeued job waits out the job credential's lifetime before it restarts (120 s by
  default): ``cred_expire=10`` keeps the preemption test short.

munged runs with its own key and socket in the cluster directory (``AuthInfo=socket=``),
so the machine's munge setup is neither used nor changed. The node advertises
``gpus`` fake GPUs (GRES without device files) so ``--gpus=1`` requests schedule, and
``SlurmdParameters=config_overrides`` lets it advertise more CPUs and memory than the
machine has, so the real profile's requests fit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SLURM_DIR = Path("/etc/slurm")
SLURM_CONF = SLURM_DIR / "slurm.conf"
GRES_CONF = SLURM_DIR / "gres.conf"
LOCK_FILE = SLURM_DIR / ".orthskip-test-cluster.lock"
MARKER = "# orthskip-test-cluster: written by tests/slurm_cluster.py, removed when it stops"
PARTITION = "debug"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "srun", "scancel", "sinfo")


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d) / name).exists()), None
    )


def missing_prerequisites() -> list[str]:
    """What stops this machine from running the cluster (empty when nothing does)."""
    missing = [name for name in DAEMONS + CLIENTS if _which(name) is None]
    problems = [f"{name} not found" for name in missing]
    if os.geteuid() != 0:
        problems.append("not root (slurmd and /etc/slurm/slurm.conf need root)")
    if SLURM_CONF.exists() and MARKER not in SLURM_CONF.read_text(errors="replace"):
        problems.append(f"{SLURM_CONF} belongs to a real SLURM installation")
    return problems


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_named(name: str) -> set[int]:
    pids = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if (p / "comm").read_text().strip() == name:
                    pids.add(int(p.name))
    return pids


@dataclass
class SlurmCluster:
    root: Path
    partition: str = PARTITION
    cpus: int = 8
    mem_mb: int = 32000
    gpus: int = 2
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def controller_log(self) -> str:
        return (self.log_dir / "slurmctld.log").read_text(errors="replace")

    def run(self, *args: str, check: bool = True) -> str:
        """Run a SLURM client command against this cluster; return its stdout."""
        res = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res.stdout

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller still knows (finished ones for MinJobAge)."""
        out = self.run("squeue", "--states=all", "--noheader", "--format=%i|%j|%T|%b|%C")
        rows = []
        for line in out.splitlines():
            jobid, name, state, gres, cpus = line.split("|")
            rows.append({"jobid": jobid, "name": name, "state": state, "gres": gres, "cpus": cpus})
        return rows

    def show_job(self, jobid: str) -> dict[str, str]:
        """``scontrol show job -o`` as a dict (``Restarts``, ``Requeue``, ``TresPerJob`` …)."""
        out = self.run("scontrol", "show", "job", "-o", jobid)
        return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)

    def submitted_job_ids(self) -> list[str]:
        """Job ids whose submission the controller logged (sbatch went through it)."""
        ids = []
        for line in self.controller_log().splitlines():
            if "_slurm_rpc_submit_batch_job" in line and "JobId=" in line:
                ids.append(line.split("JobId=")[1].split()[0])
        return ids


def _write_config(c: SlurmCluster, munge_socket: Path) -> None:
    for sub in ("state", "spool", "run", "log"):
        (c.root / sub).mkdir(parents=True, exist_ok=True)
    conf = f"""{MARKER}
ClusterName=orthskiptest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=10
StateSaveLocation={c.root}/state
SlurmdSpoolDir={c.root}/spool
SlurmctldPidFile={c.root}/run/slurmctld.pid
SlurmdPidFile={c.root}/run/slurmd.pid
SlurmctldLogFile={c.log_dir}/slurmctld.log
SlurmdLogFile={c.log_dir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=300
KillWait=5
MailProg=/bin/true
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs={c.cpus} RealMemory={c.mem_mb} \\
  Gres=gpu:{c.gpus} State=UNKNOWN
PartitionName={c.partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
    # Fake GPUs: character devices (copies of /dev/null) named like /dev/nvidiaN, so
    # SLURM gives each job its own index and sets CUDA_VISIBLE_DEVICES as it does on a
    # GPU node (slurmd insists on a device file; the name selects the CUDA variables).
    dev = c.root / "dev"
    dev.mkdir(exist_ok=True)
    null = os.stat("/dev/null").st_rdev
    for i in range(c.gpus):
        node = dev / f"nvidia{i}"
        if not node.exists():
            os.mknod(node, stat.S_IFCHR | 0o666, null)
    files = f"{dev}/nvidia[0-{c.gpus - 1}]"
    gres = f"{MARKER}\nAutoDetect=off\nNodeName=localhost Name=gpu File={files}\n"
    SLURM_DIR.mkdir(parents=True, exist_ok=True)
    for path, text in ((SLURM_CONF, conf), (GRES_CONF, gres)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


def _remove_config() -> None:
    for path in (SLURM_CONF, GRES_CONF):
        with contextlib.suppress(FileNotFoundError):
            if MARKER in path.read_text(errors="replace"):
                path.unlink()


def _start(c: SlurmCluster, name: str, argv: list[str]) -> None:
    log = open(c.log_dir / f"{name}.stdout", "ab")  # the daemon keeps its own copy
    c.procs[name] = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()


def _stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def _wait_for_node(c: SlurmCluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        for name, proc in c.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {proc.returncode}; see {c.log_dir}/{name}.log and "
                    f"{c.log_dir}/{name}.stdout"
                )
        res = subprocess.run(
            ["sinfo", "--noheader", "--Node", "--format=%T"], capture_output=True, text=True
        )
        state = res.stdout.strip()
        if res.returncode == 0 and state.rstrip("*") in ("idle", "mixed", "allocated"):
            return
        if state.startswith(("down", "drain")):
            subprocess.run(
                ["scontrol", "update", "nodename=localhost", "state=resume"], capture_output=True
            )
        time.sleep(0.5)
    raise RuntimeError(f"SLURM node not ready after {timeout} s (state {state!r}); see {c.log_dir}")


@contextlib.contextmanager
def slurm_cluster(
    root: Path, *, cpus: int = 8, mem_mb: int = 32000, gpus: int = 2, start_timeout: float = 60
) -> Iterator[SlurmCluster]:
    """Start a one-node SLURM cluster (state and logs under ``root``); stop it on exit."""
    problems = missing_prerequisites()
    if problems:
        raise RuntimeError("cannot start a test SLURM cluster: " + "; ".join(problems))
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)  # munged refuses a socket directory others can write to
    c = SlurmCluster(root=root, cpus=cpus, mem_mb=mem_mb, gpus=gpus)
    c.log_dir.mkdir(parents=True, exist_ok=True)

    SLURM_DIR.mkdir(parents=True, exist_ok=True)
    lock = open(LOCK_FILE, "a+")  # held while the cluster runs
    deadline = time.monotonic() + 600
    while True:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                lock.close()
                raise RuntimeError(
                    f"another test cluster holds {LOCK_FILE} for 10 minutes"
                ) from None
            time.sleep(1)

    stepds_before = _pids_named("slurmstepd")
    try:
        munge = root / "munge"
        munge.mkdir(mode=0o700, exist_ok=True)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        sock = munge / "munge.socket"
        _write_config(c, sock)
        _start(c, "munged", [
            _which("munged"), "--foreground", "--force", f"--socket={sock}",
            f"--key-file={key}", f"--pid-file={munge}/munged.pid",
            f"--log-file={c.log_dir}/munged.log", f"--seed-file={munge}/munged.seed",
        ])  # fmt: skip
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        _start(c, "slurmctld", [_which("slurmctld"), "-D", "-c", "-i"])
        _start(c, "slurmd", [_which("slurmd"), "-D", "-N", "localhost"])
        _wait_for_node(c, start_timeout)
        yield c
    finally:
        try:
            if "slurmctld" in c.procs and c.procs["slurmctld"].poll() is None:
                subprocess.run(
                    ["scancel", "--full", f"--partition={c.partition}"], capture_output=True
                )
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    res = subprocess.run(
                        ["squeue", "--noheader", "--format=%i"], capture_output=True, text=True
                    )
                    if res.returncode != 0 or not res.stdout.strip():
                        break
                    time.sleep(0.5)
            for name in reversed(list(c.procs)):
                _stop(c.procs[name])
            # Job-step daemons started by our slurmd while the cluster ran.
            for pid in _pids_named("slurmstepd") - stepds_before:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            _remove_config()
            lock.close()
