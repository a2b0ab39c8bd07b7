"""A tiny randomly initialised CLIP (model + BPE tokenizer) saved with save_pretrained, for the loaders."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch

WORDS = ("reach", "the", "red", "blue", "square", "circle", "go", "to")


def write_tiny_clip_tokenizer(directory: Path):
    """A CLIP BPE tokenizer over letters and a few whole words, saved in `directory`; returns it."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [*string.ascii_lowercase, *(c + "</w>" for c in string.ascii_lowercase)]:
        vocab[token] = len(vocab)
    merges = []
    for word in WORDS:  # merge each word left to right: r e -> re, re a -> rea, ..., reac h</w> -> reach</w>
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    tokenizer = CLIPTokenizer(vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"))
    tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_clip_config(vocab_size: int):
    from transformers import CLIPConfig

    text = dict(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=24,
        projection_dim=8,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    vision = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
        projection_dim=8,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A directory holding a tiny random CLIPModel and its tokenizer, as save_pretrained writes them."""
    from transformers import CLIPModel

    directory = tmp_path_factory.mktemp("tiny-clip")
    tokenizer = write_tiny_clip_tokenizer(directory)
    torch.manual_seed(0)
    CLIPModel(tiny_clip_config(len(tokenizer))).save_pretrained(directory)
    return directory
