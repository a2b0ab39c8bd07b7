"""A real Slurm cluster for tests: munged, MariaDB, slurmdbd, slurmctld and slurmd in one temp dir, as root.

Multifactor priority with fair share (through slurmdbd) and two team accounts. Partitions: `debug` on a
node at 127.0.0.1 with two GPUs (device files that every machine has stand in for them); `held` on the same
node, which takes jobs but starts none (DOWN); and, where network namespaces can be made, `multi` of two
nodes, each slurmd in its own network, UTS and mount namespace with its own address on a bridge, hostname
and /etc/hosts. Every daemon is a child of the test process and is stopped (and the namespaces and the
bridge removed) by `stop`, which also runs when `start` fails half way.

`PYTHONPATH=tests python tests/jobs/slurm/slurm_test_cluster.py DIR` starts one in DIR and holds it up
until Ctrl-C (it prints the SLURM_CONF to use).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ports import free_port

ACCOUNTS = ("team-a", "team-b")
NODE_CPUS = 2
# Slurm counts a GPU per device file; character devices every machine has stand in for them.
FAKE_GPUS = ("/dev/null", "/dev/zero")
NODE_GPUS = len(FAKE_GPUS)
NODE_MEMORY_MB = 4000
CRED_EXPIRE_S = 10
DEBUG_MAX_TIME = "2:00:00"
MULTI_MAX_TIME = "1:00:00"


def available() -> str | None:
    """Why no cluster can run here (None when it can): the Debian packages and root are needed."""
    missing = [
        tool
        for tool in ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch")
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()
    ]
    if missing:
        return (
            f"Slurm test cluster needs {', '.join(missing)} (.ci/run installs slurm-wlm slurmdbd munge "
            "mariadb-server)"
        )
    if os.geteuid() != 0:
        return "Slurm test cluster runs its daemons as root"
    return None


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


@dataclass
class NamespacedNode:
    """A slurmd host of its own: a network namespace joined to the cluster's bridge by a veth pair."""

    name: str
    namespace: str
    address: str
    veth: str


@dataclass
class SlurmCluster:
    """The daemons of one test cluster under `root`; `env` is what a client command needs (SLURM_CONF)."""

    root: Path
    node_cpus: int = NODE_CPUS
    gpu_files: tuple[str, ...] = FAKE_GPUS  # () for nodes without GPUs
    min_job_age_s: int = 600
    cluster_name: str = field(default_factory=lambda: f"lbm{secrets.token_hex(3)}")
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    namespaced: list[NamespacedNode] = field(default_factory=list)
    bridge: str | None = None
    multi_node_problem: str | None = None

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.hostname = socket.gethostname().split(".")[0]
        self.local_node = self.hostname  # as on a real cluster, a node's name is its hostname (srun's %N)
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket.2"
        self.mysql_socket = self.root / "mysql" / "mysqld.sock"
        self.ctld_port, self.slurmd_port, self.dbd_port, self.mysql_port = (free_port() for _ in range(4))
        self.controller_address = "127.0.0.1"
        self.suffix = self.cluster_name[-6:]

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def command(self, *argv: str, check: bool = True, timeout: float = 60) -> str:
        """Run a Slurm client command against this cluster; its stdout."""
        result = subprocess.run(
            list(argv), env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    # ---- start and stop ---------------------------------------------------------------------------

    def start(self) -> SlurmCluster:
        try:
            for sub in ("etc", "munge", "mysql", "state", "spool", "log", "run"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            self._make_namespaces()
            self._start_munge()
            self._start_mariadb()
            self._write_configs()
            self._start("slurmdbd", [_sbin("slurmdbd"), "-D"])
            self._wait(lambda: self._port_open(self.dbd_port), "slurmdbd")
            self._add_associations()
            self._start("slurmctld", [_sbin("slurmctld"), "-D", "-i"])
            self._wait(lambda: self.command("scontrol", "ping", check=False).count("UP") > 0, "slurmctld")
            self._start(f"slurmd-{self.local_node}", [_sbin("slurmd"), "-D", "-N", self.local_node])
            for node in self.namespaced:
                self._start(f"slurmd-{node.name}", self._namespaced_slurmd(node))
            self.wait_nodes_idle()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every daemon (slurmd first, the database last), then remove the namespaces and the bridge."""
        order = [n for n in self.processes if n.startswith("slurmd-")] + [
            "slurmctld",
            "slurmdbd",
            "mariadb",
            "munged",
        ]
        for name in order:
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        self._kill_leftover_steps()
        self._remove_network()

    def _remove_network(self) -> None:
        """Delete the namespaces and the bridge made so far."""
        for node in self.namespaced:
            subprocess.run(["ip", "netns", "delete", node.namespace], capture_output=True)
        self.namespaced = []
        if self.bridge:
            subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
            self.bridge = None

    def _kill_leftover_steps(self) -> None:
        """slurmstepd processes of this cluster outlive slurmd by design: end them (they hold our spool)."""
        spool = str(self.root / "spool")
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if cmdline.startswith("slurmstepd") and cwd.startswith(spool):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)

    def _hosts_file(self) -> Path:
        """/etc/hosts of the namespaced nodes: the machine's own entries plus every node of the cluster."""
        hosts = self.root / "etc" / "hosts"
        lines = [Path("/etc/hosts").read_text(), f"{self.controller_address} {self.hostname}-ctl\n"]
        lines += [f"{node.address} {node.name}\n" for node in self.namespaced]
        hosts.write_text("".join(lines))
        return hosts

    def _namespaced_slurmd(self, node: NamespacedNode) -> list[str]:
        """slurmd in the node's network namespace, with its own hostname and /etc/hosts (new UTS and mount
        namespaces), so it and the jobs it starts see a host of their own."""
        inside = (
            f"mount --bind {self._hosts_file()} /etc/hosts && hostname {node.name} && "
            f"exec {_sbin('slurmd')} -D -N {node.name}"
        )
        return [
            "nsenter",
            f"--net=/run/netns/{node.namespace}",
            "unshare",
            "--uts",
            "--mount",
            "sh",
            "-c",
            inside,
        ]

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.root / "log" / f"{name}.out").open("ab")
        self.processes[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **self.env, **(env or {})},
            cwd=self.root,
        )
        log.close()

    def _wait(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited ({process.returncode}) while waiting for {what}; "
                        f"see {self.root / 'log'}"
                    )
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; see {self.root / 'log'}")
            time.sleep(0.2)

    @staticmethod
    def _port_open(port: int, host: str = "127.0.0.1") -> bool:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False

    # ---- the pieces -------------------------------------------------------------------------------

    def _make_namespaces(self) -> None:
        """A bridge with the controller's address and two namespaces on it; on failure, say why and go on."""
        octet = int(self.suffix[:2], 16) % 200 + 20
        subnet = f"10.{octet}.{int(self.suffix[2:4], 16)}"
        bridge = f"lbmbr{self.suffix}"
        try:
            self._ip("link", "add", bridge, "type", "bridge")
            self.bridge = bridge
            self._ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
            self._ip("link", "set", bridge, "up")
            for index in (1, 2):
                node = NamespacedNode(
                    f"lbm-{self.suffix}-n{index}",
                    f"lbmns{self.suffix}{index}",
                    f"{subnet}.{10 + index}",
                    f"lbmv{self.suffix}{index}",
                )
                self._ip("netns", "add", node.namespace)
                self.namespaced.append(node)
                self._ip(
                    "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.namespace
                )
                self._ip("link", "set", node.veth, "master", bridge, "up")
                inside = ["netns", "exec", node.namespace, "ip"]
                self._ip(*inside, "addr", "add", f"{node.address}/24", "dev", "eth0")
                self._ip(*inside, "link", "set", "eth0", "up")
                self._ip(*inside, "link", "set", "lo", "up")
            self.controller_address = f"{subnet}.1"
        except RuntimeError as error:
            self.multi_node_problem = f"no network namespaces for a 2-node cluster here: {error}"
            self._remove_network()

    @staticmethod
    def _ip(*argv: str) -> None:
        if shutil.which("ip") is None:
            raise RuntimeError("the ip command (iproute2) is not installed")
        result = subprocess.run(["ip", *argv], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"ip {' '.join(argv)}: {result.stderr.strip()}")

    def _start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        (self.root / "munge").chmod(0o700)
        self._start(
            "munged",
            [
                _sbin("munged"),
                "-F",
                "--force",
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={self.root / 'munge' / 'munged.pid'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
                f"--seed-file={self.root / 'munge' / 'munged.seed'}",
            ],
        )
        self._wait(self.munge_socket.exists, "munged")

    def _start_mariadb(self) -> None:
        data = self.root / "mysql" / "data"
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={data}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        self._start(
            "mariadb",
            [
                _sbin("mariadbd"),
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={self.mysql_socket}",
                f"--port={self.mysql_port}",
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-grant-tables",
                f"--pid-file={self.root / 'mysql' / 'mysqld.pid'}",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=16M",
                "--innodb-lock-wait-timeout=900",
                "--skip-log-bin",
            ],
        )
        self._wait(lambda: self._port_open(self.mysql_port), "mariadb")

    def _write_configs(self) -> None:
        auth = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\n"
        # A requeued job waits a credential lifetime (120 s by default) before it may start again.
        ctld_auth = f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket},cred_expire={CRED_EXPIRE_S}\n"
        dbd = self.root / "etc" / "slurmdbd.conf"
        dbd.write_text(
            f"{auth}DbdAddr=127.0.0.1\nDbdHost=localhost\nDbdPort={self.dbd_port}\nSlurmUser=root\n"
            f"DebugLevel=info\nLogFile={self.root / 'log' / 'slurmdbd.log'}\n"
            f"PidFile={self.root / 'run' / 'slurmdbd.pid'}\n"
            f"StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort={self.mysql_port}\n"
            f"StorageUser=root\nStorageLoc=slurm_{self.cluster_name}\n"
        )
        dbd.chmod(0o600)
        nodes = [(self.local_node, "127.0.0.1")] + [(n.name, n.address) for n in self.namespaced]
        for name, _ in nodes:
            (self.root / "spool" / name).mkdir(exist_ok=True)
        node_lines = "".join(
            f"NodeName={name} NodeAddr={address} CPUs={self.node_cpus} RealMemory={NODE_MEMORY_MB} "
            f"{f'Gres=gpu:{len(self.gpu_files)} ' if self.gpu_files else ''}State=UNKNOWN\n"
            for name, address in nodes
        )
        partitions = (
            f"PartitionName=debug Nodes={self.local_node} Default=YES MaxTime={DEBUG_MAX_TIME} State=UP\n"
            f"PartitionName=held Nodes={self.local_node} MaxTime={DEBUG_MAX_TIME} State=DOWN\n"
        )
        if self.namespaced:
            partitions += (
                f"PartitionName=multi Nodes={','.join(n.name for n in self.namespaced)} "
                f"MaxTime={MULTI_MAX_TIME} State=UP\n"
            )
        (self.root / "etc" / "gres.conf").write_text(
            "AutoDetect=off\n"
            + "".join(
                f"NodeName={name} Name=gpu File={device}\n" for name, _ in nodes for device in self.gpu_files
            )
        )
        self.conf.write_text(
            f"ClusterName={self.cluster_name}\nSlurmctldHost={self.hostname}({self.controller_address})\n"
            f"SlurmctldPort={self.ctld_port}\nSlurmdPort={self.slurmd_port}\n{ctld_auth}CredType=cred/munge\n"
            "SlurmUser=root\nSlurmdUser=root\n"
            f"StateSaveLocation={self.root / 'state'}\nSlurmdSpoolDir={self.root / 'spool'}/%n\n"
            f"SlurmctldPidFile={self.root / 'run' / 'slurmctld.pid'}\n"
            f"SlurmdPidFile={self.root / 'run'}/slurmd-%n.pid\n"
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}\n"
            f"SlurmdLogFile={self.root / 'log'}/slurmd-%n.log\n"
            "SlurmctldDebug=info\nSlurmdDebug=info\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSwitchType=switch/none\nMpiDefault=none\n"
            "SelectType=select/cons_tres\nSelectTypeParameters=CR_CPU\nSlurmdParameters=config_overrides\n"
            "GresTypes=gpu\nReturnToService=2\nSchedulerType=sched/backfill\n"
            "SchedulerParameters=bf_interval=1,sched_min_interval=100000\n"
            "AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\n"
            f"AccountingStoragePort={self.dbd_port}\nAccountingStoragePass={self.munge_socket}\n"
            "AccountingStorageEnforce=associations,limits,qos\n"
            "JobAcctGatherType=jobacct_gather/none\nJobCompType=jobcomp/none\n"
            "PriorityType=priority/multifactor\nPriorityWeightFairshare=100000\nPriorityWeightAge=0\n"
            "PriorityWeightJobSize=0\nPriorityWeightPartition=0\nPriorityWeightQOS=0\n"
            "PriorityDecayHalfLife=1-0\nPriorityCalcPeriod=1\n"
            f"KillWait=5\nInactiveLimit=0\nMinJobAge={self.min_job_age_s}\nMessageTimeout=10\nSlurmdTimeout=60\n"
            "SlurmctldTimeout=60\nMailProg=/bin/true\nJobRequeue=1\n"
            f"{node_lines}{partitions}"
        )

    def _add_associations(self) -> None:
        self.command("sacctmgr", "-i", "add", "cluster", self.cluster_name)
        for account in ACCOUNTS:
            self.command(
                "sacctmgr", "-i", "add", "account", account, f"cluster={self.cluster_name}", "fairshare=1"
            )
        self.command(
            "sacctmgr",
            "-i",
            "add",
            "user",
            "root",
            f"account={','.join(ACCOUNTS)}",
            f"cluster={self.cluster_name}",
            f"defaultaccount={ACCOUNTS[0]}",
        )

    def wait_nodes_idle(self, timeout: float = 90) -> None:
        names = [self.local_node] + [n.name for n in self.namespaced]

        def idle() -> bool:
            out = self.command("sinfo", "-N", "-h", "-o", "%N %t", check=False)
            states = dict(line.split() for line in out.splitlines() if line.strip())
            return all(states.get(name) == "idle" for name in names)

        self._wait(idle, f"nodes {', '.join(names)} idle", timeout)


if __name__ == "__main__":
    import sys
    import tempfile

    cluster = SlurmCluster(Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="slurm-")))
    cluster.start()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})  # after: daemons inherit masks
    print(f"export SLURM_CONF={cluster.conf}", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()
