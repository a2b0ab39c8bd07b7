"""`python -m lbm.jobs.slurm.archive RUN_DIR`: the end-of-job archive, run by a Slurm job's batch script.

It packs the job's node and batch logs with the run's metrics (secrets in the job's environment redacted)
into `<artifact>/output/output.tar.gz`, as every backend does where its jobs end.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lbm.jobs.environment import ARTIFACT_URI, OUTPUT_DIR
from lbm.secrets import SECRET_ENV_NAMES
from lbm.storage.archive import upload_archive


def main(argv: Sequence[str]) -> int:
    run_dir = Path(argv[0])
    logs = [*sorted((run_dir / "logs").glob("*.log")), run_dir / "batch.log"]
    secrets = [os.environ[name] for name in SECRET_ENV_NAMES if os.environ.get(name)]
    url = upload_archive(Path(os.environ[OUTPUT_DIR]), logs, os.environ[ARTIFACT_URI], secrets)
    print(f"lbm: archive {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
