"""The batch script of a Slurm job: its step (`torchrun` of `lbm train`) on every node through one `srun`,
the rendezvous on the allocation's first node, a checkpoint before the time limit, a requeue while retries
are left, and a last command once the job is done (the end-of-job archive).

The script holds no secret (they reach the job through sbatch's environment). It traps SIGUSR1 (sent
`--signal=B:USR1@120` before the time limit) and SIGTERM and sends SIGTERM to the training step's tasks
(`scancel --signal`: srun itself would end the step outright), whose trainer then saves a checkpoint and
stops. An attempt that fails with retries left requeues the job
(`scontrol requeue`), and the next attempt resumes from the job's checkpoints; a job requeued by Slurm itself
(a node failure) past its retries ends at once. SIGTERM to the script is a stop (`sagey stop`): no requeue,
the archive is still written, and the job ends with status 143 (FAILED). Attempts count from 0
(`LBM_ATTEMPT`, Slurm's restart count).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# The training step's rendezvous port on the first node: this base plus the job id modulo 10000.
RENDEZVOUS_PORT_BASE = 20000
CHECKPOINT_SIGNAL = "B:USR1@120"
# The batch script's exit status after a stop (128 + SIGTERM, as a shell reports a process it ended).
STOPPED_EXIT_STATUS = 143


@dataclass(frozen=True)
class BatchJob:
    """What the batch script runs: `step` on every node (its words may hold `${...}` for the node's shell)."""

    name: str
    step: tuple[str, ...]
    retries: int
    run_dir: str
    env: Mapping[str, str] = field(default_factory=dict)
    after: tuple[str, ...] = ()


def node_log(run_dir: str, attempt: int | str, node: str) -> str:
    """Where the output of `node` in attempt `attempt` goes (srun expands `%N` to the node's name)."""
    return f"{run_dir}/logs/attempt-{attempt}-{node}.log"


def training_step(
    train_args: Sequence[str], nproc_per_node: int, python: str = sys.executable
) -> tuple[str, ...]:
    """torchrun of `lbm train TRAIN_ARGS` on one node; the node's shell fills in its rank and the first
    node's address (srun's SLURM_LAUNCH_NODE_IPADDR)."""
    return (
        python, "-m", "torch.distributed.run",
        "--nnodes=${SLURM_NNODES}", "--node-rank=${SLURM_NODEID}", f"--nproc-per-node={nproc_per_node}",
        "--master-addr=${SLURM_LAUNCH_NODE_IPADDR}",
        f"--master-port=$(( {RENDEZVOUS_PORT_BASE} + SLURM_JOB_ID % 10000 ))",
        "-m", "lbm.cli.train", *train_args,
    )  # fmt: skip


def _exports(env: Mapping[str, str]) -> str:
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(env.items()))


def _words(argv: Sequence[str]) -> str:
    """argv as shell words, keeping `${...}` and `$((...))` expansions (quoted as one word each)."""
    return " ".join(f'"{word}"' if "$" in word else shlex.quote(word) for word in argv)


def batch_script(job: BatchJob) -> str:
    """The text of the job's batch script."""
    step = f"bash -c {shlex.quote('exec ' + _words(job.step))}"
    after = f"{_words(job.after)}\n" if job.after else ""
    log = node_log(job.run_dir, "${LBM_ATTEMPT}", "%N")
    return f"""#!/bin/bash
# lbm job {job.name}: its step on every node through srun; a training step's rendezvous is on the first node.
set -u
{_exports(job.env)}export LBM_ATTEMPT=${{SLURM_RESTART_COUNT:-0}}
retries={job.retries}
mkdir -p {shlex.quote(job.run_dir)}/logs
echo "lbm: attempt $LBM_ATTEMPT of job {job.name} on $SLURM_JOB_NODELIST"
if (( LBM_ATTEMPT > retries )); then
  echo "lbm: requeued after its last retry ($retries): not running again"
  exit 1
fi
step=
stopped=0
checkpoint() {{ echo "lbm: $1: checkpointing"; [[ -n "$step" ]] && scancel --signal=TERM "$SLURM_JOB_ID.0"; }}
trap 'checkpoint "time limit near"' USR1
trap 'stopped=1; checkpoint "stop requested"' TERM
srun --kill-on-bad-exit=1 --ntasks-per-node=1 --output="{log}" {step} &
step=$!
while true; do
  wait "$step"
  code=$?
  kill -0 "$step" 2>/dev/null || break
done
echo "lbm: attempt $LBM_ATTEMPT ended with exit status $code"
if (( code != 0 && LBM_ATTEMPT < retries && ! stopped )); then
  echo "lbm: requeueing for attempt $(( LBM_ATTEMPT + 1 ))"
  scontrol requeue "$SLURM_JOB_ID" && exit 0
fi
{after}(( stopped )) && exit {STOPPED_EXIT_STATUS}
exit "$code"
"""
