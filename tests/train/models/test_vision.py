from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torchvision

from lbm.errors import LbmError
from lbm.train.models.vision import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    get_clip_vit_base_patch16,
    get_resnet,
)

torch.set_num_threads(2)
RESNET18_FILE = "resnet18-f37072fd.pth"  # torchvision's file name for ResNet18_Weights.IMAGENET1K_V1


def _normalized(images, mean, std):
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _by_suffix(state_dict, name):
    """The one tensor of `state_dict` whose key ends with `name` (layouts differ between versions)."""
    (value,) = [v for k, v in state_dict.items() if k == name or k.endswith(f".{name}")]
    return value


def test_resnet_without_weights_gives_512_features_of_imagenet_normalized_images():
    torch.manual_seed(0)
    encoder = get_resnet("resnet18", weights=None).eval()
    images = torch.rand(2, 3, 32, 32)
    features = encoder(images)
    assert features.shape == (2, 512) and encoder.output_dim == 512
    torch.testing.assert_close(features, encoder.backbone(_normalized(images, IMAGENET_MEAN, IMAGENET_STD)))


def test_missing_resnet_weights_name_the_cache_file_and_the_remedies(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(LbmError) as error:
        get_resnet("resnet18", weights="IMAGENET1K_V1")
    message = str(error.value)
    assert os.path.join(str(tmp_path), "hub", "checkpoints", RESNET18_FILE) in message
    assert "weights: null" in message and "\n" not in message
    assert not (tmp_path / "hub" / "checkpoints" / RESNET18_FILE).exists()


def test_resnet_weights_in_the_cache_are_loaded(tmp_path, monkeypatch):
    torch.manual_seed(1)
    saved = torchvision.models.resnet18().state_dict()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(saved, checkpoints / RESNET18_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    encoder = get_resnet("resnet18", weights="IMAGENET1K_V1")
    loaded = encoder.backbone.state_dict()
    for name in ("conv1.weight", "layer4.1.bn2.running_var"):
        torch.testing.assert_close(loaded[name], saved[name])


def test_a_corrupt_resnet_weights_file_is_a_user_error(tmp_path, monkeypatch):
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / RESNET18_FILE).write_bytes(b"not a checkpoint")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(LbmError, match=f"cannot load resnet18 weights from .*{RESNET18_FILE}"):
        get_resnet("resnet18", weights="IMAGENET1K_V1")


def test_unknown_resnet_or_weights_name_lists_the_valid_ones():
    with pytest.raises(LbmError, match="unknown ResNet 'resnet19'.*resnet18"):
        get_resnet("resnet19")
    with pytest.raises(LbmError, match="unknown weights 'IMAGENET9K' for resnet18.*IMAGENET1K_V1"):
        get_resnet("resnet18", weights="IMAGENET9K")


def test_clip_loads_from_a_local_directory_and_normalizes_with_clip_stats(tiny_clip_dir):
    from transformers import CLIPModel

    encoder = get_clip_vit_base_patch16(model_name_or_path=str(tiny_clip_dir)).eval()
    saved = CLIPModel.from_pretrained(tiny_clip_dir).state_dict()
    loaded = encoder.vision_model.state_dict()
    for name in ("embeddings.patch_embedding.weight", "post_layernorm.bias"):
        torch.testing.assert_close(_by_suffix(loaded, name), _by_suffix(saved, f"vision_model.{name}"))
    images = torch.rand(3, 3, 32, 32)
    features = encoder(images)
    assert features.shape == (3, encoder.output_dim) == (3, 16)
    expected = encoder.vision_model(pixel_values=_normalized(images, CLIP_MEAN, CLIP_STD)).pooler_output
    torch.testing.assert_close(features, expected)
    # crops of another size than the checkpoint's use interpolated position embeddings
    assert encoder(torch.rand(2, 3, 48, 48)).shape == (2, 16)
    # a string `pretrained` names the checkpoint
    same = get_clip_vit_base_patch16(pretrained=str(tiny_clip_dir)).eval()
    torch.testing.assert_close(same(images), features)


def test_clip_from_scratch_is_a_randomly_initialised_patch16_vit():
    encoder = get_clip_vit_base_patch16(
        pretrained=False, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    assert encoder.vision_model.config.patch_size == 16
    assert encoder(torch.rand(1, 3, 224, 224)).shape == (1, encoder.output_dim) == (1, 32)


def test_a_directory_without_clip_weights_is_a_user_error(tmp_path):
    with pytest.raises(LbmError, match=f"CLIP vision weights not found in directory {tmp_path}") as error:
        get_clip_vit_base_patch16(model_name_or_path=str(tmp_path))
    assert "save_pretrained" in str(error.value) and "pretrained: false" in str(error.value)


def test_a_directory_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(LbmError, match=f"directory {tmp_path / 'nowhere'} does not exist"):
        get_clip_vit_base_patch16(model_name_or_path=str(tmp_path / "nowhere"))


def test_a_checkpoint_without_the_vision_tower_is_a_user_error(tmp_path):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    CLIPTextModel(config).save_pretrained(tmp_path)
    with pytest.raises(LbmError, match="CLIP vision weights") as error:
        get_clip_vit_base_patch16(model_name_or_path=str(tmp_path))
    assert "pretrained: false" in str(error.value)


def test_missing_clip_names_the_model_the_cache_and_the_remedies(tmp_path):
    script = textwrap.dedent(
        """
        from lbm.errors import LbmError
        from lbm.train.models.text import CLIPTextEncoder
        from lbm.train.models.vision import get_clip_vit_base_patch16

        for build in (get_clip_vit_base_patch16, CLIPTextEncoder):
            try:
                build()
            except LbmError as error:
                print(error)
            else:
                print("loaded")
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    vision, text = done.stdout.strip().splitlines()
    cache = str(tmp_path / "hf" / "hub")
    assert vision.startswith("CLIP vision weights 'openai/clip-vit-base-patch16' are not on this machine")
    assert cache in vision and "hf download openai/clip-vit-base-patch16" in vision
    assert "model_name_or_path" in vision and "pretrained: false" in vision
    assert text.startswith("CLIP tokenizer files 'openai/clip-vit-base-patch16' are not on this machine")
    assert cache in text and "HashingTextEncoder" in text
    assert not any((tmp_path / "hf").rglob("*.safetensors"))
