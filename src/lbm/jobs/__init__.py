"""Jobs, their states, queues, and the protocol every backend implements."""

from lbm.jobs.backend import Backend
from lbm.jobs.model import Attempt, Job, JobSpec, JobState, Queue, QueueUsage

__all__ = ["Attempt", "Backend", "Job", "JobSpec", "JobState", "Queue", "QueueUsage"]
