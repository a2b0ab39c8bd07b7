"""Text encoders for task instructions: forward(instructions: list[str], device) -> [B, output_dim]."""

from __future__ import annotations

import re
import zlib
from typing import Any

import torch
from torch import nn

from lbm.errors import LbmError
from lbm.train.models.vision import load_pretrained_model, missing_pretrained_error

_WORD = re.compile(r"[a-z0-9]+")

# Options that belong to the other encoder. Hydra merges config nodes, so a node whose `_target_` is switched
# (e.g. by a config that inherits the CLIP one, or a conditional sweep file) keeps them: each encoder accepts
# and ignores the other's options.
HASHING_OPTIONS = ("embed_dim", "vocab_buckets")
CLIP_OPTIONS = ("model_name_or_path", "pretrained", "freeze")


class HashingTextEncoder(nn.Module):
    """Learned bag-of-words embedding of an instruction; needs no files and no tokenizer.

    Lower-cased words are hashed (CRC-32, stable across processes) into `vocab_buckets` embeddings, which
    are averaged and passed through a linear layer: [B] strings -> [B, embed_dim]. An instruction without
    words embeds to the linear layer's bias. CLIPTextEncoder's options (CLIP_OPTIONS) are ignored.
    """

    def __init__(self, embed_dim: int = 64, vocab_buckets: int = 4096, **clip_options: Any) -> None:
        super().__init__()
        unknown = sorted(set(clip_options) - set(CLIP_OPTIONS))
        if unknown:
            raise LbmError(
                f"HashingTextEncoder got unknown options {unknown}: it takes embed_dim and vocab_buckets"
            )
        if embed_dim < 1 or vocab_buckets < 1:
            raise LbmError(
                f"HashingTextEncoder needs embed_dim >= 1 and vocab_buckets >= 1 "
                f"(got embed_dim={embed_dim}, vocab_buckets={vocab_buckets})"
            )
        self.output_dim = embed_dim
        self.vocab_buckets = vocab_buckets
        self.embedding = nn.EmbeddingBag(vocab_buckets, embed_dim, mode="mean")
        self.proj = nn.Linear(embed_dim, embed_dim)

    def token_ids(self, instruction: str) -> list[int]:
        """The bucket of each word of `instruction`, in order."""
        return [zlib.crc32(word.encode()) % self.vocab_buckets for word in _WORD.findall(instruction.lower())]

    def forward(self, instructions: list[str], device: torch.device | str | None = None) -> torch.Tensor:
        device = self.proj.weight.device if device is None else device
        ids = [self.token_ids(instruction) for instruction in instructions]
        offsets = torch.tensor([0, *(len(row) for row in ids[:-1])], device=device).cumsum(0)
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long, device=device)
        return self.proj(self.embedding(flat, offsets))


class CLIPTextEncoder(nn.Module):
    """CLIP text tower with projection: [B] strings -> [B, output_dim] (512 for ViT-B/16's CLIP).

    pretrained: True loads `model_name_or_path` (a Hugging Face model id found in the local cache, or a
    directory written by save_pretrained); False builds a randomly initialised text model (the tokenizer
    files are still needed). freeze: the weights are not trained, the model stays in eval mode, and each
    distinct instruction is encoded once and then served from a cache (cleared when weights are loaded).
    `kwargs` override the text config, except HashingTextEncoder's options (HASHING_OPTIONS), which are
    ignored.
    """

    def __init__(
        self,
        model_name_or_path: str = "openai/clip-vit-base-patch16",
        pretrained: bool = True,
        freeze: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        kwargs = {key: value for key, value in kwargs.items() if key not in HASHING_OPTIONS}
        self.tokenizer = _load_tokenizer(model_name_or_path)
        if pretrained:
            self.model = load_pretrained_model(
                CLIPTextModelWithProjection,
                model_name_or_path,
                what="CLIP text weights",
                alternative="set pretrained: false to train the text encoder from scratch",
                **kwargs,
            )
        else:
            special = {
                name: getattr(self.tokenizer, name)
                for name in ("bos_token_id", "eos_token_id", "pad_token_id")
            }
            self.model = CLIPTextModelWithProjection(
                CLIPTextConfig(**{"vocab_size": len(self.tokenizer), **special, **kwargs})
            )
        self.output_dim: int = self.model.config.projection_dim
        self.max_length: int = self.model.config.max_position_embeddings
        self.freeze = freeze
        self._cache: dict[str, torch.Tensor] = {}
        if freeze:
            self.model.requires_grad_(False)
            self.model.eval()
        self.register_load_state_dict_post_hook(CLIPTextEncoder._clear_cache)

    @staticmethod
    def _clear_cache(module: CLIPTextEncoder, incompatible_keys: Any) -> None:
        module._cache.clear()

    def train(self, mode: bool = True) -> CLIPTextEncoder:
        super().train(mode)
        if self.freeze:
            self.model.eval()
        return self

    def forward(self, instructions: list[str], device: torch.device | str | None = None) -> torch.Tensor:
        device = self.model.device if device is None else device
        if not self.freeze:
            return self._encode(instructions, device)
        new = sorted(set(instructions) - self._cache.keys())
        if new:
            with torch.no_grad():
                self._cache.update(zip(new, self._encode(new, device).float(), strict=True))
        return torch.stack([self._cache[instruction] for instruction in instructions]).to(device)

    def _encode(self, instructions: list[str], device: torch.device | str) -> torch.Tensor:
        tokens = self.tokenizer(
            instructions, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        return self.model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).text_embeds


def _load_tokenizer(model_name_or_path: str) -> Any:
    """The CLIP tokenizer of `model_name_or_path`, from local files only."""
    from transformers import CLIPTokenizer
    from transformers.utils import cached_file

    alternative = "use lbm.train.models.text.HashingTextEncoder, which needs no files"
    # CLIPTokenizer.from_pretrained may return an empty tokenizer when the files are missing: check first.
    try:
        cached_file(model_name_or_path, "tokenizer_config.json", local_files_only=True)
    except OSError as error:
        what = "CLIP tokenizer files"
        raise missing_pretrained_error(model_name_or_path, what, alternative, error) from None
    return CLIPTokenizer.from_pretrained(model_name_or_path, local_files_only=True)
