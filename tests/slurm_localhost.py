"""A throw-away single-node SLURM cluster on localhost, for proving the SLURM profile.

Debian's ``slurm-wlm`` (22.05) and ``munge`` are installed with apt when absent; then
``munged``, ``slurmctld`` and ``slurmd -N localhost`` start as root with no accounting,
and every daemon is stopped by PID when the context exits, whatever happened inside.

Why the settings look as they do (each was found the hard way on a Debian 12 machine):

* ``slurmd`` needs root here; ``proctrack/linuxproc`` and ``task/none`` need no cgroups.
* The host name is not ``localhost``, so the node is declared ``NodeName=localhost
  NodeAddr=127.0.0.1`` and slurmd is told its name with ``-N localhost``.
* The config must be ``/etc/slurm/slurm.conf``: the executor plugin's job step runs a
  nested ``srun`` with ``SLURM_CONF`` stripped from its environment.  An existing
  ``slurm.conf`` that this module did not write is never touched (the caller skips).
* With no accounting ``sacct`` fails, so the profile must query ``squeue``; ``squeue``
  forgets a finished job after ``MinJobAge`` seconds, so that stays at its default (300).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

SLURM_CONF = Path("/etc/slurm/slurm.conf")
MARKER = "# written by actbridge tests/slurm_localhost.py"
PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "srun")


class ClusterUnavailable(RuntimeError):
    """This machine cannot host the throw-away cluster; the message says why."""


def missing_commands() -> list[str]:
    """The SLURM and munge commands not on PATH (nor in /usr/sbin)."""
    search = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin"
    return [name for name in DAEMONS if shutil.which(name, path=search) is None]


def install_packages(timeout_s: float = 600) -> None:
    """Install slurm-wlm and munge with apt-get, or say why that cannot be done."""
    if not missing_commands():
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable("slurm-wlm/munge are not installed and this user is not root")
    if shutil.which("apt-get") is None:
        raise ClusterUnavailable("slurm-wlm/munge are not installed and there is no apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:  # a stale package index: refresh it once and retry
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=timeout_s)
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0 or missing_commands():
        tail = (result.stdout + result.stderr)[-2000:]
        raise ClusterUnavailable(f"apt-get install {' '.join(PACKAGES)} failed:\n{tail}")


def node_resources() -> tuple[int, int]:
    """(CPUs, RealMemory MiB) as ``slurmd -C`` reads them off this machine."""
    output = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    fields = dict(item.split("=", 1) for item in output.split() if "=" in item)
    return int(fields["CPUs"]), int(fields["RealMemory"])


def slurm_conf(state: Path, cpus: int, memory_mb: int) -> str:
    """A minimal single-node configuration: no accounting, no cgroups, one partition."""
    return f"""{MARKER}
ClusterName=actbridge-ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/spool
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=ci Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    """Handles of a running throw-away cluster."""

    state: Path
    partition: str = "ci"
    pids: dict[str, int] = field(default_factory=dict)

    def log_tail(self, lines: int = 40) -> str:
        """The end of each daemon's log, for a failure message."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.state / name
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name}\n" + "\n".join(text))
        return "\n".join(parts)


def _start(command: list[str], pid_file: Path, name: str, timeout_s: float = 20) -> int:
    """Start a daemon that forks into the background and return its PID from pid_file."""
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pid_file.exists() and pid_file.read_text().strip():
            return int(pid_file.read_text().split()[0])
        time.sleep(0.1)
    raise ClusterUnavailable(f"{name} did not write {pid_file} within {timeout_s:.0f} s")


def _wait_for_idle_node(timeout_s: float) -> None:
    """Block until sinfo reports the node idle (slurmd registered with slurmctld)."""
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        result = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True)
        state = result.stdout.strip()
        if state in ("idle", "mix", "alloc"):
            return
        time.sleep(0.5)
    raise ClusterUnavailable(f"the node did not come up within {timeout_s:.0f} s (sinfo: {state!r})")


def _stop(pid: int, grace_s: float = 10) -> None:
    """SIGTERM, then SIGKILL after grace_s; a PID already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            os.kill(pid, 0)  # raises ProcessLookupError once it is gone
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def localhost_cluster(state: Path, startup_timeout_s: float = 60) -> Iterator[Cluster]:
    """Run a one-node cluster for the duration of the ``with`` block.

    Raises ClusterUnavailable (before touching anything) where the machine cannot host
    it: not root, no apt-get, or a ``/etc/slurm/slurm.conf`` that belongs to someone else.
    """
    if os.geteuid() != 0:
        raise ClusterUnavailable("slurmd must run as root for the localhost cluster")
    if SLURM_CONF.exists() and MARKER not in SLURM_CONF.read_text(errors="replace"):
        raise ClusterUnavailable(f"{SLURM_CONF} exists and was not written by these tests")
    install_packages()
    state = state.resolve()
    for sub in ("ctld", "spool", "munge"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    cpus, memory_mb = node_resources()
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(slurm_conf(state, cpus, memory_mb))
    cluster = Cluster(state=state)
    try:
        munge_key = Path("/etc/munge/munge.key")
        if not munge_key.exists():
            subprocess.run(["mungekey", "--create", f"--keyfile={munge_key}"], check=True)
        munge_socket = Path("/run/munge/munge.socket.2")
        munge_socket.parent.mkdir(parents=True, exist_ok=True)
        cluster.pids["munged"] = _start(
            ["munged", "--force", f"--pid-file={state}/munged.pid",
             f"--log-file={state}/munged.log", f"--socket={munge_socket}"],
            state / "munged.pid", "munged",
        )
        cluster.pids["slurmctld"] = _start(["slurmctld", "-c"], state / "slurmctld.pid", "slurmctld")
        cluster.pids["slurmd"] = _start(["slurmd", "-N", "localhost"], state / "slurmd.pid", "slurmd")
        _wait_for_idle_node(startup_timeout_s)
        yield cluster
    finally:
        for name in ("slurmd", "slurmctld", "munged"):
            if name in cluster.pids:
                _stop(cluster.pids[name])
        SLURM_CONF.unlink(missing_ok=True)
