"""The backend contract (`tests/jobs/contract.py`) on SageMaker through AWS Batch: the Batch emulator runs
the engine's side on its own, moto's SageMaker and CloudWatch Logs hold the attempts and their logs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from batch_emulator import BatchEmulator, EmulatedQueue
from sagemaker_harness import REGION, SETTINGS

from jobs.contract import BackendContract
from lbm.jobs.model import JobSpec, Queue
from lbm.jobs.region import Region
from lbm.jobs.sagemaker.backend import SageMakerBackend

INSTANCE_TYPE = "ml.p5.48xlarge"


class SageMakerDriver:
    def __init__(self, emulator: BatchEmulator, bucket: str):
        self.emulator = emulator
        self.outcomes: dict[str, str] = {}
        self.region = Region(
            name=REGION,
            backend="sagemaker",
            bucket=bucket,
            prefix="sagemaker_outputs",
            queues=[
                Queue("fss-wide", INSTANCE_TYPE, 4, fair_share=True),
                Queue("fss-held", INSTANCE_TYPE, 1, fair_share=True),
            ],
            main_image="lbm-sagemaker",
            settings=SETTINGS.model_dump(mode="json", by_alias=True),
        )
        self.held_queue = "fss-held"
        emulator.drive(self.outcomes, {self.held_queue})
        self.backend = SageMakerBackend(self.region)
        self.backend.poll_interval_s = 0.05

    def spec(
        self, name: str, *, outcome: str = "succeed", owner: str = "ann", queue: str | None = None
    ) -> JobSpec:
        self.outcomes[name] = outcome
        artifact = f"{self.region.bucket}/sagemaker_outputs/{owner}-lbm/{name}/"
        return JobSpec(
            name=name,
            owner=owner,
            queue=queue or self.region.queues[0].name,
            command=("lbm", "train", "--config-uri", f"{artifact}config.yaml"),
            artifact_uri=artifact,
            share_identifier=owner,
            instance_type=INSTANCE_TYPE,
            region=REGION,
            image_uri="lbm-sagemaker",
            max_runtime_s=3600.0,
        )

    def release(self, name: str) -> None:
        self.emulator.release(name)

    def environment(self, name: str) -> dict[str, str] | None:
        """The Environment of the training job Batch started (what SageMaker gives the container)."""
        return json.loads(self.emulator.job(name)["serviceRequestPayload"])["Environment"]


class TestSageMakerContract(BackendContract):
    @pytest.fixture
    def contract(self, moto_endpoint, s3_bucket, monkeypatch) -> Iterator[SageMakerDriver]:
        queues = [EmulatedQueue("fss-wide", True, 4), EmulatedQueue("fss-held", True, 1)]
        emulator = BatchEmulator(queues)
        monkeypatch.setenv("AWS_ENDPOINT_URL_BATCH", emulator.url)
        yield SageMakerDriver(emulator, s3_bucket[0])
        emulator.close()
        assert emulator.refused == []
