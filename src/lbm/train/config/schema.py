"""The rules every training config obeys, key by key, beside the configs that set the values.

One pydantic model per config section (`task`, `policy`, `ema`, `dataloader`, `optimizer`, `training`,
`checkpoint`, `logging`): a field per key with its type and range, and validators for the rules that tie
keys together (horizon against observation and action steps, a crop against the image, inference steps
against training timesteps). A key without a field is accepted as it is (`+training.note=...`); every key
of the shipped configs has one. Torch-free: `lbm launch` checks a job's config with it before queuing.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lbm.errors import LbmError
from lbm.train.data.buffer_mapping import stored_keys

LOGGING_MODES = ("online", "offline", "disabled")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
INFERENCE_SCHEDULERS = ("ddim", "ddpm")
# The diffusers learning-rate schedules the trainer can build from a name, warmup and length alone.
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "laplace", "sigmoid")
MIXED_PRECISION = ("bf16", "no")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
MAX_SEED = 2**32 - 1

Count = Annotated[int, Field(ge=1)]
Size = Annotated[int, Field(ge=0)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Fraction = Annotated[float, Field(ge=0, le=1)]
# A name, where a number is taken as its text (`logging.group=2024`).
Name = Annotated[str, Field(strict=False)]
# An image size (height, width) in pixels.
HeightWidth = Annotated[list[Count], Field(min_length=2, max_length=2)]


class Section(BaseModel):
    """A config section: strict types (no "3" for 3, no 2.0 for a count), extra keys allowed."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True, coerce_numbers_to_str=True)


class Built(Section):
    """A section that names the class (or function) it builds."""

    target: str = Field(alias="_target_", min_length=1)


# ---- task ----------------------------------------------------------------------------------------------


class ObsMeta(Section):
    shape: list[Count] = Field(min_length=1)
    type: Literal["rgb", "low_dim"]

    @model_validator(mode="after")
    def _rgb_is_channels_height_width(self) -> ObsMeta:
        if self.type == "rgb" and (len(self.shape) != 3 or self.shape[0] != 3):
            raise ValueError(f"an rgb observation's shape is [3, height, width], got {self.shape}")
        return self


class ActionMeta(Section):
    shape: list[Count] = Field(min_length=1)


class ShapeMeta(Section):
    obs: dict[str, ObsMeta] = Field(min_length=1)
    action: ActionMeta

    def image_sizes(self) -> dict[str, list[int]]:
        """(height, width) of each rgb observation."""
        return {key: meta.shape[1:] for key, meta in self.obs.items() if meta.type == "rgb"}


class Synthesize(Section):
    tasks: Count
    episodes_per_task: Count
    image_size: Count
    seed: Seed


class EpisodeTasks(Section):
    """The task and instruction of a range of episodes [first, stop) of a buffer that stores none."""

    task: Name = Field(min_length=1)
    instruction: str = Field(min_length=1)
    episodes: Annotated[list[Size], Field(min_length=2, max_length=2)] | None = None

    @model_validator(mode="after")
    def _range_is_first_before_stop(self) -> EpisodeTasks:
        if self.episodes is not None and self.episodes[0] >= self.episodes[1]:
            raise ValueError(f"episodes is [first, stop) with first < stop, got {self.episodes}")
        return self


class Dataset(Built):
    dataset_path: str = Field(min_length=1)
    shape_meta: ShapeMeta
    horizon: Count
    n_obs_steps: Count
    n_action_steps: Count
    val_ratio: float = Field(ge=0, lt=1)
    seed: Seed
    tasks: list[Annotated[Name, Field(min_length=1)]] | None = Field(default=None, min_length=1)
    max_train_episodes: Count | None = None
    # shape_meta key (or action) -> where the buffer stores it: KEY or KEY[START:STOP].
    key_map: dict[str, Name] | None = None
    episode_tasks: list[EpisodeTasks] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _key_map_maps_shape_meta_keys(self) -> Dataset:
        try:
            stored_keys(self.shape_meta.model_dump(), self.key_map)
        except LbmError as error:
            raise ValueError(str(error)) from None
        return self

    @model_validator(mode="after")
    def _one_entry_when_it_covers_every_episode(self) -> Dataset:
        entries = self.episode_tasks or []
        if len(entries) > 1 and any(entry.episodes is None for entry in entries):
            raise ValueError("with more than one episode_tasks entry, each needs episodes: [first, stop]")
        return self


class EnvSuite(Built):
    """An environment suite (`lbm.envs`): the synthetic scene's options, and Meta-World's."""

    num_tasks: Count | None = None
    image_size: Count | None = None
    max_steps: Count | None = None
    # Meta-World: a benchmark name (mt10) or task names, and the camera of the images.
    tasks: Name | list[Annotated[Name, Field(min_length=1)]] | None = None
    camera: Name | None = None


class EnvRunner(Section):
    """Closed-loop rollouts: the environment suite and which episodes."""

    env: EnvSuite
    n_test: Count
    n_test_vis: Size = 0
    test_start_seed: Seed


class Task(Section):
    name: Name
    dataset_path: str = Field(min_length=1)
    synthesize: Synthesize | None = None
    shape_meta: ShapeMeta
    dataset: Dataset
    env_runner: EnvRunner | None = None

    @model_validator(mode="after")
    def _synthetic_images_fit_shape_meta(self) -> Task:
        if self.synthesize is None:
            return self
        size = self.synthesize.image_size
        for key, (height, width) in self.shape_meta.image_sizes().items():
            if (height, width) != (size, size):
                raise ValueError(
                    f"task.synthesize.image_size={size} makes {size}x{size} images, but "
                    f"task.shape_meta.obs.{key}.shape is [3, {height}, {width}]: make them match"
                )
        return self


# ---- policy --------------------------------------------------------------------------------------------


class NoiseScheduler(Built):
    num_train_timesteps: Count
    beta_start: float = Field(gt=0, lt=1)
    beta_end: float = Field(gt=0, lt=1)
    beta_schedule: Literal[BETA_SCHEDULES]
    clip_sample: bool
    prediction_type: Literal[PREDICTION_TYPES]

    @model_validator(mode="after")
    def _betas_rise(self) -> NoiseScheduler:
        if self.beta_start >= self.beta_end:
            raise ValueError(
                f"policy.noise_scheduler.beta_start={self.beta_start} must be below beta_end={self.beta_end}"
            )
        return self


class RgbModel(Section):
    """One image model for every camera (a map of camera -> model is an extra key per camera)."""

    target: str | None = Field(default=None, alias="_target_", min_length=1)
    name: str | None = None
    weights: str | None = None
    pretrained: bool | str | None = None
    model_name_or_path: str | None = None
    channels: list[Count] | None = Field(default=None, min_length=1)
    num_keypoints: Count | None = None
    condition_dim: Size | None = None


class ObsEncoder(Built):
    shape_meta: ShapeMeta | None = None
    rgb_model: RgbModel
    resize_shape: HeightWidth | None = None
    crop_shape: HeightWidth | None = None
    random_crop: bool | None = None
    share_rgb_model: bool | None = None
    use_group_norm: bool | None = None


class TextEncoder(Built):
    embed_dim: Count | None = None
    vocab_buckets: Count | None = None
    pretrained: bool | str | None = None
    model_name_or_path: str | None = None
    freeze: bool | None = None


class Policy(Built):
    shape_meta: ShapeMeta
    horizon: Count
    n_action_steps: Count
    n_obs_steps: Count
    num_inference_steps: Count | None = None
    inference_scheduler: Literal[INFERENCE_SCHEDULERS] | None = None
    noise_scheduler: NoiseScheduler
    obs_encoder: ObsEncoder
    text_encoder: TextEncoder
    diffusion_step_embed_dim: Count
    down_dims: list[Count] = Field(min_length=1)
    kernel_size: Count
    n_groups: Count
    cond_predict_scale: bool

    @field_validator("diffusion_step_embed_dim")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even (sine and cosine halves)")
        return value

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("must be odd, so that convolutions keep the sequence length")
        return value

    @model_validator(mode="after")
    def _shapes_fit(self) -> Policy:
        check_horizon("policy.", self.horizon, self.n_obs_steps, self.n_action_steps)
        odd = [dim for dim in self.down_dims if dim % self.n_groups]
        if odd:
            raise ValueError(
                f"policy.down_dims={self.down_dims} must all be multiples of policy.n_groups={self.n_groups} "
                f"(for GroupNorm); {odd} are not"
            )
        multiple = 2 ** (len(self.down_dims) - 1)
        if self.horizon % multiple:
            raise ValueError(
                f"policy.horizon={self.horizon} must be a multiple of {multiple}: the UNet of "
                f"policy.down_dims={self.down_dims} halves the sequence {len(self.down_dims) - 1} time(s)"
            )
        steps, timesteps = self.num_inference_steps, self.noise_scheduler.num_train_timesteps
        if steps is not None and steps > timesteps:
            raise ValueError(
                f"policy.num_inference_steps={steps} must not exceed "
                f"policy.noise_scheduler.num_train_timesteps={timesteps}"
            )
        return self


def check_horizon(prefix: str, horizon: int, n_obs_steps: int, n_action_steps: int) -> None:
    """ValueError unless a window of `horizon` steps holds the observed steps and the executed actions."""
    if n_obs_steps - 1 + n_action_steps > horizon:
        raise ValueError(
            f"{prefix}horizon={horizon} is too short for {prefix}n_obs_steps={n_obs_steps} and "
            f"{prefix}n_action_steps={n_action_steps}: the horizon must be at least "
            f"n_obs_steps - 1 + n_action_steps = {n_obs_steps - 1 + n_action_steps}"
        )


# ---- training ------------------------------------------------------------------------------------------


class Ema(Section):
    update_after_step: Size
    inv_gamma: float = Field(gt=0, allow_inf_nan=False)
    power: float = Field(gt=0, allow_inf_nan=False)
    min_value: Fraction
    max_value: Fraction

    @model_validator(mode="after")
    def _min_below_max(self) -> Ema:
        if self.min_value > self.max_value:
            raise ValueError(f"ema.min_value={self.min_value} must not exceed ema.max_value={self.max_value}")
        return self


class Loader(Section):
    batch_size: Count
    num_workers: Size
    shuffle: bool
    pin_memory: bool
    persistent_workers: bool


class Optimizer(Built):
    lr: float = Field(gt=0, allow_inf_nan=False)
    betas: list[Annotated[float, Field(ge=0, lt=1)]] | None = Field(default=None, min_length=2, max_length=2)
    eps: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    weight_decay: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    momentum: float | None = Field(default=None, ge=0, lt=1)


class Training(Section):
    device: str
    seed: Seed
    num_epochs: Count
    max_train_steps: Count | None = None
    lr_scheduler: Literal[LR_SCHEDULERS]
    lr_warmup_steps: Size
    gradient_accumulate_every: Count
    lr_scale_for_grouped_params: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = None
    use_ema: bool
    mixed_precision: Literal[MIXED_PRECISION] | None = None
    val_every: Count
    val_per_step: bool
    max_val_batches: Count | None = None
    sample_every: Size | None = None
    rollout_every: Size | None = None
    log_every: Count
    resume: bool
    resume_checkpoint_path: str | None = Field(default=None, min_length=1)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE.fullmatch(value):
            raise ValueError("must be auto, cpu, mps, cuda or cuda:<index>")
        return value


class Checkpoint(Section):
    every_n_steps: Count
    topk: Size
    monitor_key: str | None = None
    mode: Literal["min", "max"] | None = None

    @field_validator("monitor_key")
    @classmethod
    def _logged_metric(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"val_loss|test_mean_score|test_success_\w+", value):
            raise ValueError("must be val_loss, test_mean_score or test_success_<task>")
        return value


class Logging(Section):
    mode: Literal[LOGGING_MODES]
    project: Name | None = None
    name: Name | None = None
    group: Name | None = None
    tags: list[Name] | None = None


class TrainingConfig(Section):
    """A whole training config (the diffusion_policy structure)."""

    name: Name
    horizon: Count
    n_obs_steps: Count
    n_action_steps: Count
    task: Task
    policy: Policy
    ema: Ema | None = None
    dataloader: Loader
    val_dataloader: Loader
    optimizer: Optimizer
    training: Training
    checkpoint: Checkpoint
    logging: Logging

    @model_validator(mode="before")
    @classmethod
    def _horizon_holds_the_steps(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            steps = [data.get(key) for key in ("horizon", "n_obs_steps", "n_action_steps")]
            if all(type(value) is int for value in steps):
                check_horizon("", *steps)
        return data

    @model_validator(mode="after")
    def _sections_agree(self) -> TrainingConfig:
        if self.training.use_ema and self.ema is None:
            raise ValueError("training.use_ema=true needs an ema section (or set training.use_ema=false)")
        encoder = self.policy.obs_encoder
        if encoder.crop_shape is not None:
            for key, size in self.task.shape_meta.image_sizes().items():
                seen, images = (
                    (encoder.resize_shape, "images resized by policy.obs_encoder.resize_shape to")
                    if encoder.resize_shape is not None
                    else (size, f"task.shape_meta.obs.{key} images of")
                )
                if encoder.crop_shape[0] > seen[0] or encoder.crop_shape[1] > seen[1]:
                    raise ValueError(
                        f"policy.obs_encoder.crop_shape={encoder.crop_shape} is larger than the {images} "
                        f"{seen[0]}x{seen[1]} (height x width): use a crop no larger than the image"
                    )
        return self


# pydantic's wording of a broken rule, made short: "Input should be greater than 0" -> "must be > 0".
_SUBJECTS = ("Input", "String", "List", "Dictionary")
_WORDS = (
    ("a valid integer", "a whole number"),
    ("a valid number", "a number"),
    ("a valid boolean", "true or false"),
    ("greater than or equal to", ">="),
    ("less than or equal to", "<="),
    ("greater than", ">"),
    ("less than", "<"),
)


def check_config(config: Mapping[str, Any]) -> None:
    """LbmError, one line naming the key, its value and the rule, for the first value `config` gets wrong.

    `config` is the resolved config as plain data (`OmegaConf.to_container(cfg, resolve=True)`).
    """
    try:
        TrainingConfig.model_validate(config)
    except ValidationError as error:
        raise LbmError(describe(error.errors(include_url=False)[0])) from None


def unruled_keys(
    config: Mapping[str, Any], model: type[BaseModel] = TrainingConfig, prefix: str = ""
) -> list[str]:
    """The keys of `config` (dotted, at any depth) without a field in `model`: their values go unchecked."""
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    found = []
    for key, value in config.items():
        if key not in fields:
            found.append(prefix + key)
        elif isinstance(value, Mapping):
            found += _unruled_below(value, fields[key].annotation, f"{prefix}{key}.")
    return found


def _unruled_below(value: Mapping[str, Any], annotation: Any, prefix: str) -> list[str]:
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for kind in typing.get_args(annotation) if union else (annotation,):
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return unruled_keys(value, kind, prefix)
        if typing.get_origin(kind) is dict:
            item = typing.get_args(kind)[1]
            if isinstance(item, type) and issubclass(item, BaseModel):
                return [
                    key
                    for name, entry in value.items()
                    for key in unruled_keys(entry, item, f"{prefix}{name}.")
                ]
    return []


def describe(error: Mapping[str, Any]) -> str:
    """One pydantic error as one line: `key=value is not valid: rule`, or a rule that names its keys."""
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])[1:]
    message = error["msg"].replace(" after validation", "")
    if error["type"] == "missing":
        return f"{key} is missing: this config must set it"
    if error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
        if isinstance(error.get("input"), Mapping):
            # A rule across keys: its message names them, or it is about the section at `key`.
            return message if message.startswith(key.split(".")[0]) else f"{key}: {message}"
    for words, short in (*_WORDS, *((f"{subject} should", "must") for subject in _SUBJECTS)):
        message = message.replace(words, short)
    return f"{key}={error.get('input')!r} is not valid: {message}"
