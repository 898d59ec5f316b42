"""Builds a small open_clip model with random weights and saves it as a local open_clip folder.

Random weights still map an image to the same vector every time and keep mild crops close to
their source, which is what the round-trip tests need; they give no semantic quality.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def build_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """Write open_clip_config.json + open_clip_model.safetensors into `folder`; return the folder."""
    import torch
    from safetensors.torch import save_file

    from services.torch_compat import import_open_clip

    open_clip = import_open_clip()
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": TINY_CONFIG, "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CONFIG)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


def build_tiny_multilingual_clip(folder: Path, seed: int = 0) -> Path:
    """A tiny open_clip model shaped like `xlm-roberta-base-ViT-B-32`: a Hugging Face XLM-RoBERTa
    text tower (random weights) with its own small SentencePiece-style (Unigram) tokenizer trained
    here on English and Chinese words, all inside one local-dir folder, as open_clip reads it."""
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import XLMRobertaConfig, XLMRobertaTokenizerFast

    from services.torch_compat import import_open_clip

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    core = Tokenizer(models.Unigram())
    core.normalizer, core.pre_tokenizer, core.decoder = (
        normalizers.NFKC(),
        pre_tokenizers.Metaspace(),
        decoders.Metaspace(),
    )
    corpus = [
        "red running shoes",
        "a wooden chair",
        "leather sofa",
        "跑步鞋",
        "木头椅子",
        "真皮沙发",
        "红色连帽衫",
    ] * 20
    core.train_from_iterator(
        corpus, trainers.UnigramTrainer(vocab_size=150, special_tokens=specials, unk_token="<unk>")
    )
    tokenizer = XLMRobertaTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>", cls_token="<s>", sep_token="</s>",
    )  # fmt: skip
    tokenizer.save_pretrained(folder)
    XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=80, pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2,
    ).save_pretrained(folder)  # fmt: skip
    config = {
        "embed_dim": 32,
        "vision_cfg": TINY_CONFIG["vision_cfg"],
        "text_cfg": {
            "hf_model_name": str(folder),
            "hf_tokenizer_name": str(folder),
            "hf_pooler_type": "mean_pooler",
            "hf_model_pretrained": False,  # the checkpoint below holds the text tower's weights too
            "context_length": 32,
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": {}}))
    torch.manual_seed(seed)
    model = import_open_clip().CustomTextCLIP(**config)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder
