from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch

from lbm.errors import LbmError
from lbm.train.models.text import CLIPTextEncoder, HashingTextEncoder

torch.set_num_threads(2)
INSTRUCTIONS = [
    "reach the red square",
    "reach the blue circle",
    "reach the red square",
    "go to the blue square",
]


def test_hashing_encoder_embeds_each_instruction_by_its_words():
    torch.manual_seed(0)
    encoder = HashingTextEncoder(embed_dim=16, vocab_buckets=512)
    out = encoder(INSTRUCTIONS, "cpu")
    assert out.shape == (4, 16) and encoder.output_dim == 16
    torch.testing.assert_close(out[0], out[2])
    assert not torch.allclose(out[0], out[1])
    # case and punctuation do not matter, word order does not either (a bag of words)
    same = encoder(["Reach the RED square.", "square red the reach"])
    torch.testing.assert_close(same, out[[0, 0]])
    # an instruction without words still embeds
    assert torch.isfinite(encoder(["", "?!"])).all()


def test_hashing_encoder_buckets_do_not_depend_on_the_process():
    """Python's hash() is salted per process; the buckets must not be (checkpoints outlive processes)."""
    code = (
        "from lbm.train.models.text import HashingTextEncoder; "
        "print(HashingTextEncoder().token_ids('Reach red'))"
    )
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.strip() == str(HashingTextEncoder().token_ids("reach RED"))
    assert hash("reach") != int(  # this process's string hashes differ from the other's
        subprocess.run(
            [sys.executable, "-c", "print(hash('reach'))"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


def test_hashing_encoder_learns():
    torch.manual_seed(0)
    encoder = HashingTextEncoder(embed_dim=8, vocab_buckets=64)
    target = torch.randn(2, 8)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        loss = (encoder(INSTRUCTIONS[:2]) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_hashing_encoder_sizes_must_be_positive():
    with pytest.raises(LbmError, match="embed_dim >= 1"):
        HashingTextEncoder(embed_dim=0)


def test_each_text_encoder_ignores_the_others_options_and_nothing_else(tiny_clip_dir):
    """A config node switched from one encoder to the other by a merge keeps the first one's options."""
    hashing = HashingTextEncoder(embed_dim=8, pretrained=True, freeze=True, model_name_or_path="x")
    assert hashing.output_dim == 8 and all(p.requires_grad for p in hashing.parameters())
    with pytest.raises(LbmError, match=r"unknown options \['embd_dim'\]"):
        HashingTextEncoder(embd_dim=8)
    clip = CLIPTextEncoder(model_name_or_path=str(tiny_clip_dir), embed_dim=32, vocab_buckets=64)
    assert clip.output_dim == 8


def test_frozen_clip_text_encoder_loads_the_saved_weights_and_caches_per_instruction(tiny_clip_dir):
    from transformers import CLIPModel

    encoder = CLIPTextEncoder(model_name_or_path=str(tiny_clip_dir))
    saved = CLIPModel.from_pretrained(tiny_clip_dir).state_dict()
    name = "text_projection.weight"
    torch.testing.assert_close(encoder.model.state_dict()[name], saved[name])
    assert not any(p.requires_grad for p in encoder.parameters())

    encoder.train()
    assert not encoder.model.training  # frozen: no dropout whatever the policy's mode
    out = encoder(INSTRUCTIONS, "cpu")
    assert out.shape == (4, encoder.output_dim) == (4, 8) and out.dtype == torch.float32
    torch.testing.assert_close(out[0], out[2])
    assert not torch.allclose(out[0], out[1])
    # served from the cache: the same values, in the order asked for
    torch.testing.assert_close(encoder(INSTRUCTIONS[::-1]), out.flip(0))
    tokens = encoder.tokenizer(INSTRUCTIONS[:1], return_tensors="pt")
    torch.testing.assert_close(out[:1], encoder.model(**tokens).text_embeds)


def test_loading_weights_into_a_frozen_encoder_clears_its_cache(tiny_clip_dir):
    encoder = CLIPTextEncoder(model_name_or_path=str(tiny_clip_dir))
    before = encoder(INSTRUCTIONS[:2])
    state = {name: value + 0.5 for name, value in encoder.state_dict().items()}
    encoder.load_state_dict(state)
    assert not torch.allclose(encoder(INSTRUCTIONS[:2]), before)


def test_unfrozen_clip_text_encoder_trains(tiny_clip_dir):
    encoder = CLIPTextEncoder(model_name_or_path=str(tiny_clip_dir), freeze=False)
    encoder(INSTRUCTIONS).square().mean().backward()
    assert encoder.model.text_projection.weight.grad.abs().sum() > 0


def test_clip_text_encoder_from_scratch_uses_the_tokenizer_files_and_copies(tiny_clip_dir):
    encoder = CLIPTextEncoder(
        model_name_or_path=str(tiny_clip_dir),
        pretrained=False,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        projection_dim=12,
    )
    assert encoder.model.config.vocab_size == len(encoder.tokenizer)
    out = encoder(INSTRUCTIONS)
    assert out.shape == (4, 12)
    twin = copy.deepcopy(encoder)  # the trainer's EMA copies the whole policy
    torch.testing.assert_close(twin(INSTRUCTIONS), out)


def test_missing_tokenizer_is_a_user_error_that_points_at_the_hashing_encoder(tmp_path):
    with pytest.raises(LbmError, match=f"CLIP tokenizer files not found in directory {tmp_path}") as error:
        CLIPTextEncoder(model_name_or_path=str(tmp_path), pretrained=False)
    assert "HashingTextEncoder" in str(error.value)


def test_a_checkpoint_without_the_text_tower_is_a_user_error(tmp_path, tiny_clip_dir):
    from transformers import CLIPTokenizer, CLIPVisionConfig, CLIPVisionModel

    CLIPTokenizer.from_pretrained(tiny_clip_dir).save_pretrained(tmp_path)
    config = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    CLIPVisionModel(config).save_pretrained(tmp_path)
    with pytest.raises(LbmError, match="CLIP text weights") as error:
        CLIPTextEncoder(model_name_or_path=str(tmp_path))
    assert "pretrained: false" in str(error.value)


def test_the_clip_configs_text_encoder_runs_from_a_local_checkpoint(tiny_clip_dir, tmp_path, monkeypatch):
    from hydra.utils import instantiate

    from lbm.train.compose import compose_config

    monkeypatch.setenv("LBM_DATA_DIR", str(tmp_path))
    cfg = compose_config(
        "train_diffusion_unet_clip_lang_stage_base", [f"task.dataset_path={tmp_path}/d.zarr"]
    )
    cfg.policy.text_encoder.model_name_or_path = str(tiny_clip_dir)
    encoder = instantiate(cfg.policy.text_encoder, _convert_="partial")
    assert isinstance(encoder, CLIPTextEncoder) and encoder.freeze
    assert encoder(INSTRUCTIONS).shape == (4, 8)
