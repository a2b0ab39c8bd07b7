"""The `sagemaker` block of a site region: the AWS account, role and keys its training jobs run with."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# SageMaker's bounds (CreateTrainingJob: KeepAlivePeriodInSeconds 0-21600; volumes up to 16 TB).
MAX_KEEP_ALIVE_S = 21600
MAX_VOLUME_GB = 16384


class RegionSettings(BaseModel):
    """`regions.<name>.sagemaker` in the site file, e.g.
    `{account: "123456789012", roleArn: arn:aws:iam::123456789012:role/lbm-training, volumeSizeGb: 500}`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    account: str = Field(pattern=r"^\d{12}$", description="the 12-digit AWS account id (for ECR image URIs)")
    role_arn: str = Field(
        alias="roleArn",
        pattern=r"^arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+$",
        description="the IAM role SageMaker runs training jobs as",
    )
    kms_key_id: str | None = Field(
        default=None,
        alias="kmsKeyId",
        pattern=r"^[a-zA-Z0-9:/_-]+$",
        max_length=2048,
        description="KMS key for the output, checkpoints and volumes",
    )
    volume_size_gb: int = Field(default=500, alias="volumeSizeGb", ge=1, le=MAX_VOLUME_GB)
    keep_alive_seconds: int = Field(default=0, alias="keepAliveSeconds", ge=0, le=MAX_KEEP_ALIVE_S)
    wandb_secret_id: str | None = Field(
        default=None,
        alias="wandbSecretId",
        min_length=1,
        max_length=2048,
        description="Secrets Manager secret of the W&B API key (else the key is in the job's environment)",
    )
    project: str = Field(
        default="lbm", min_length=1, max_length=256, description="the `project` tag of every job"
    )
