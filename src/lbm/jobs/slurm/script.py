"""The batch script of a Slurm job: `torchrun` on every node through one `srun`, the rendezvous on the
allocation's first node, a checkpoint before the time limit, and a requeue while retries are left.

The script holds no secret (they reach the job through sbatch's environment). It traps SIGUSR1 (sent
`--signal=B:USR1@120` before the time limit) and SIGTERM and passes SIGTERM on to the training step, whose
trainer then saves a checkpoint and stops. An attempt that fails with retries left requeues the job
(`scontrol requeue`), and the next attempt resumes from the job's checkpoints; a job requeued by Slurm itself
(a node failure) past its retries ends at once.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# The training step's rendezvous port on the first node: this base plus the job id modulo 10000.
RENDEZVOUS_PORT_BASE = 20000
CHECKPOINT_SIGNAL = "B:USR1@120"


@dataclass(frozen=True)
class BatchJob:
    """What the batch script runs: `train_args` (the arguments of `lbm train`) on every node."""

    name: str
    train_args: tuple[str, ...]
    nproc_per_node: int
    retries: int
    run_dir: str
    env: Mapping[str, str] = field(default_factory=dict)
    python: str = sys.executable
    after: tuple[str, ...] = ()

    def node_log(self) -> str:
        """srun's output file of each node (`%N`: the node's name) for the attempt."""
        return f"{self.run_dir}/logs/attempt-${{LBM_ATTEMPT}}-%N.log"


def torchrun_argv(job: BatchJob) -> list[str]:
    """torchrun of `lbm train` on one node; the shell expands the node rank and the first node address."""
    return [
        job.python, "-m", "torch.distributed.run",
        "--nnodes=${SLURM_NNODES}", "--node-rank=${SLURM_NODEID}", f"--nproc-per-node={job.nproc_per_node}",
        "--master-addr=${SLURM_LAUNCH_NODE_IPADDR}",
        f"--master-port=$(( {RENDEZVOUS_PORT_BASE} + SLURM_JOB_ID % 10000 ))",
        "-m", "lbm.cli.train", *job.train_args,
    ]  # fmt: skip


def _exports(env: Mapping[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(env.items()))


def _words(argv: Sequence[str]) -> str:
    """argv as shell words, keeping `${...}` and `$((...))` expansions (quoted as one word each)."""
    return " ".join(f'"{word}"' if "$" in word else shlex.quote(word) for word in argv)


def batch_script(job: BatchJob) -> str:
    """The text of the job's batch script."""
    step = f"bash -c {shlex.quote('exec ' + _words(torchrun_argv(job)))}"
    after = f"{_words(job.after)}\n" if job.after else ""
    return f"""#!/bin/bash
# lbm job {job.name}: one torchrun per node through srun; the rendezvous is on the first node.
set -u
export LBM_ATTEMPT=$(( ${{SLURM_RESTART_COUNT:-0}} + 1 ))
retries={job.retries}
{_exports(job.env)}mkdir -p {shlex.quote(job.run_dir)}/logs
echo "lbm: attempt $LBM_ATTEMPT of job {job.name} on $SLURM_JOB_NODELIST"
if (( LBM_ATTEMPT > retries + 1 )); then
  echo "lbm: requeued after its last retry ($retries): not running again"
  exit 1
fi
step=
stop() {{ echo "lbm: stop requested: checkpointing"; [[ -n "$step" ]] && kill -TERM "$step"; }}
trap stop USR1 TERM
srun --kill-on-bad-exit=1 --ntasks-per-node=1 --output="{job.node_log()}" {step} &
step=$!
while true; do
  wait "$step"
  code=$?
  kill -0 "$step" 2>/dev/null || break
done
echo "lbm: attempt $LBM_ATTEMPT ended with exit status $code"
if (( code != 0 && LBM_ATTEMPT <= retries )); then
  echo "lbm: requeueing for attempt $(( LBM_ATTEMPT + 1 ))"
  scontrol requeue "$SLURM_JOB_ID" && exit 0
fi
{after}exit "$code"
"""
