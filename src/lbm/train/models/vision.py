"""Image encoders: float images [B, 3, H, W] in [0, 1] → features [B, output_dim].

Each encoder applies the normalisation its weights expect (ImageNet mean/std for ResNet, CLIP mean/std for
CLIP) itself. Pretrained weights come only from local files (torch hub cache, Hugging Face cache or a
directory): a missing file is an LbmError that says where it was expected and how to provide it.
"""

from __future__ import annotations

import os
import pickle
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.transforms import v2

from lbm.errors import LbmError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Options that belong to the other getter. Hydra merges config nodes, so a node whose `_target_` is switched
# (as users' conditional sweep files do, e.g. CLIP <-> ResNet) keeps them: each getter accepts and ignores
# the other's options.
RESNET_OPTIONS = ("name", "weights")
CLIP_OPTIONS = ("pretrained", "model_name_or_path")
KEYPOINT_OPTIONS = (
    "channels",
    "num_keypoints",
    "condition_dim",
)  # lbm.train.models.keypoints.get_keypoint_cnn's


class ResNetImageEncoder(nn.Module):
    """A torchvision ResNet without its classifier; ImageNet mean/std applied inside.

    forward(images [B, 3, H, W] in [0, 1]) -> [B, output_dim] (512 for resnet18 and resnet34, 2048 above).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.output_dim: int = backbone.fc.in_features
        backbone.fc = nn.Identity()
        self.normalize = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(images))


def resnet_names() -> list[str]:
    """The torchvision ResNet variants get_resnet can build."""
    return [name for name in torchvision.models.list_models(module=torchvision.models) if "resne" in name]


def get_resnet(name: str = "resnet18", weights: str | None = None, **kwargs: Any) -> ResNetImageEncoder:
    """A torchvision ResNet feature extractor (see ResNetImageEncoder), random or with `weights`.

    `weights` names one of torchvision's weight sets for `name` (e.g. "IMAGENET1K_V1"); its file must be in
    the torch hub cache ($TORCH_HOME/hub/checkpoints). `kwargs` go to the torchvision model builder, except
    get_clip_vit_base_patch16's and get_keypoint_cnn's options (CLIP_OPTIONS, KEYPOINT_OPTIONS), which are
    ignored.
    """
    kwargs = {key: value for key, value in kwargs.items() if key not in (*CLIP_OPTIONS, *KEYPOINT_OPTIONS)}
    if name not in resnet_names():
        raise LbmError(f"unknown ResNet {name!r}: use one of {', '.join(resnet_names())}")
    if weights is None:
        return ResNetImageEncoder(torchvision.models.get_model(name, weights=None, **kwargs))
    weight_set = torchvision.models.get_model_weights(name)
    try:
        chosen = weight_set.verify(weights)
    except (KeyError, ValueError):
        raise LbmError(
            f"unknown weights {weights!r} for {name}: use one of {', '.join(weight_set.__members__)} or null"
        ) from None
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(chosen.url).path))
    if not os.path.isfile(path):
        raise LbmError(
            f"{name} weights {weights} are not on this machine: expected {path}; download {chosen.url} to "
            f"that path (set TORCH_HOME to choose the cache), or set weights: null to train from scratch"
        )
    try:
        backbone = torchvision.models.get_model(name, weights=chosen, **kwargs)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise LbmError(
            f"cannot load {name} weights from {path} ({_first_line(error)}): replace it with a good copy of "
            f"{chosen.url}, or set weights: null"
        ) from None
    return ResNetImageEncoder(backbone)


class CLIPImageEncoder(nn.Module):
    """The vision tower of CLIP; CLIP mean/std applied inside.

    forward(images [B, 3, H, W] in [0, 1]) -> pooled features [B, output_dim] (768 for ViT-B/16). Images of
    another size than the model's (224 for ViT-B/16) use interpolated position embeddings.
    """

    def __init__(self, vision_model: nn.Module) -> None:
        super().__init__()
        self.output_dim: int = vision_model.config.hidden_size
        self.image_size: int = vision_model.config.image_size
        self.normalize = v2.Normalize(CLIP_MEAN, CLIP_STD)
        self.vision_model = vision_model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        resized = tuple(images.shape[-2:]) != (self.image_size, self.image_size)
        output = self.vision_model(pixel_values=self.normalize(images), interpolate_pos_encoding=resized)
        return output.pooler_output


def get_clip_vit_base_patch16(
    pretrained: bool | str = True,
    model_name_or_path: str = "openai/clip-vit-base-patch16",
    **kwargs: Any,
) -> CLIPImageEncoder:
    """CLIP ViT-B/16 image features (see CLIPImageEncoder).

    pretrained: True loads `model_name_or_path` (a Hugging Face model id found in the local cache, or a
    directory written by save_pretrained; a string here is taken as that name); False builds a randomly
    initialised ViT-B/16. `kwargs` override the vision config (e.g. attn_implementation), except get_resnet's
    and get_keypoint_cnn's options (RESNET_OPTIONS, KEYPOINT_OPTIONS), which are ignored.
    """
    from transformers import CLIPVisionConfig, CLIPVisionModel

    kwargs = {key: value for key, value in kwargs.items() if key not in (*RESNET_OPTIONS, *KEYPOINT_OPTIONS)}

    if isinstance(pretrained, str):
        model_name_or_path, pretrained = pretrained, True
    if not pretrained:
        return CLIPImageEncoder(CLIPVisionModel(CLIPVisionConfig(**{"patch_size": 16, **kwargs})))
    vision_model = load_pretrained_model(
        CLIPVisionModel,
        model_name_or_path,
        what="CLIP vision weights",
        alternative="set pretrained: false to train the image encoder from scratch",
        **kwargs,
    )
    return CLIPImageEncoder(vision_model)


def load_pretrained_model(
    model_class: Any, model_name_or_path: str, *, what: str, alternative: str, **kwargs: Any
) -> nn.Module:
    """`model_class.from_pretrained` from local files only (a directory or the Hugging Face cache).

    Raises LbmError naming `what` is missing and how to provide it (including `alternative`), also when the
    checkpoint lacks weights the model needs.
    """
    from transformers.utils import logging as transformers_logging

    # Silence the per-tensor load report (missing weights are checked below) and the progress bars.
    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        model, loading_info = model_class.from_pretrained(
            model_name_or_path, local_files_only=True, output_loading_info=True, **kwargs
        )
    except OSError as error:
        raise missing_pretrained_error(model_name_or_path, what, alternative, error) from None
    except (RuntimeError, ValueError) as error:
        raise LbmError(
            f"cannot load {what} from {model_name_or_path!r} ({_first_line(error)}): point "
            f"model_name_or_path at a CLIP checkpoint, or {alternative}"
        ) from None
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
    missing = sorted(loading_info["missing_keys"])
    if missing:
        raise LbmError(
            f"{model_name_or_path!r} lacks {what} ({len(missing)} tensors, e.g. {missing[0]}): point "
            f"model_name_or_path at a full CLIP checkpoint, or {alternative}"
        )
    return model


def missing_pretrained_error(
    model_name_or_path: str, what: str, alternative: str, error: Exception
) -> LbmError:
    """The LbmError for pretrained files found neither in a local directory nor in the Hugging Face cache."""
    if os.path.isdir(model_name_or_path):
        return LbmError(
            f"{what} not found in directory {model_name_or_path} ({_first_line(error)}): write them there "
            f"with save_pretrained, or {alternative}"
        )
    if os.path.isabs(model_name_or_path) or model_name_or_path.startswith((".", "~")):
        return LbmError(
            f"{what}: directory {model_name_or_path} does not exist: give an existing directory written by "
            f"save_pretrained, or a Hugging Face model id in the local cache, or {alternative}"
        )
    from huggingface_hub import constants

    return LbmError(
        f"{what} {model_name_or_path!r} are not on this machine (not a local directory, not in the Hugging "
        f"Face cache {constants.HF_HUB_CACHE}): on a machine with internet run `hf download "
        f"{model_name_or_path}` with HF_HOME set to the cache this job uses, or set model_name_or_path to a "
        f"directory written by save_pretrained, or {alternative}"
    )


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
