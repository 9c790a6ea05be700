"""Mean-pooled BERT sentence models (all-MiniLM-L6-v2) on torch's own transformer layers.

A BERT encoder layer is exactly torch's post-norm :class:`torch.nn.TransformerEncoderLayer`
with exact GELU: self-attention, residual, LayerNorm, feed-forward, residual, LayerNorm.
Loading the folder's ``model.safetensors`` into those layers and its ``tokenizer.json``
into the ``tokenizers`` library gives the sentence-transformers embeddings (to 1e-5;
tested against sentence-transformers) without importing ``transformers``, whose import
alone costs a fresh ``geodiffloc locate`` about 5 s on two cores.

Only plain BERT folders qualify (``model_type: bert``, exact GELU, absolute positions,
safetensors weights, a fast tokenizer file); :meth:`MeanPooledBert.load` returns ``None``
for anything else, and the caller uses sentence-transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["MeanPooledBert"]


def _plain_bert(folder: Path) -> dict[str, Any] | None:
    """The folder's BERT config if this module can run it exactly, else ``None``."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
        tok = json.loads((folder / "tokenizer.json").read_text())
    except (OSError, ValueError):
        return None
    if not (folder / "model.safetensors").is_file():
        return None
    if (cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu"
            or cfg.get("position_embedding_type", "absolute") != "absolute"):
        return None
    # transformers rebuilds the normaliser when tokenizer_config.json disagrees with it;
    # such a folder is left to sentence-transformers rather than tokenised differently
    try:
        tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        tok_cfg = {}
    norm = tok.get("normalizer") or {}
    if "do_lower_case" in tok_cfg and bool(tok_cfg["do_lower_case"]) != bool(
            norm.get("lowercase", False)):
        return None
    return cfg


def _state_dict(weights: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """BERT's parameter names mapped onto the embedding and ``nn.TransformerEncoder`` ones."""
    w = {k.removeprefix("bert."): v for k, v in weights.items()}
    out = {
        "word.weight": w["embeddings.word_embeddings.weight"],
        "position.weight": w["embeddings.position_embeddings.weight"],
        "token_type.weight": w["embeddings.token_type_embeddings.weight"],
        "norm.weight": w["embeddings.LayerNorm.weight"],
        "norm.bias": w["embeddings.LayerNorm.bias"],
    }
    for i in range(n_layers):
        src, dst = f"encoder.layer.{i}.", f"encoder.layers.{i}."
        att = src + "attention.self."
        for p in ("weight", "bias"):
            out[dst + f"self_attn.in_proj_{p}"] = torch.cat(
                [w[att + f"{n}.{p}"] for n in ("query", "key", "value")])
            out[dst + f"self_attn.out_proj.{p}"] = w[src + f"attention.output.dense.{p}"]
            out[dst + f"norm1.{p}"] = w[src + f"attention.output.LayerNorm.{p}"]
            out[dst + f"linear1.{p}"] = w[src + f"intermediate.dense.{p}"]
            out[dst + f"linear2.{p}"] = w[src + f"output.dense.{p}"]
            out[dst + f"norm2.{p}"] = w[src + f"output.LayerNorm.{p}"]
    return out


class MeanPooledBert:
    """Token embeddings of a BERT folder averaged over the attention mask, L2-normalised.

    Use :meth:`load`; it returns ``None`` for folders this class cannot run exactly.
    """

    def __init__(self, folder: Path, cfg: dict[str, Any], max_length: int,
                 device: torch.device) -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        d, eps = int(cfg["hidden_size"]), float(cfg.get("layer_norm_eps", 1e-12))
        n_layers = int(cfg["num_hidden_layers"])
        layer = nn.TransformerEncoderLayer(
            d, int(cfg["num_attention_heads"]), int(cfg["intermediate_size"]), dropout=0.0,
            activation="gelu", layer_norm_eps=eps, batch_first=True, norm_first=False)
        self.net = nn.ModuleDict({
            "word": nn.Embedding(int(cfg["vocab_size"]), d),
            "position": nn.Embedding(int(cfg["max_position_embeddings"]), d),
            "token_type": nn.Embedding(int(cfg.get("type_vocab_size", 2)), d),
            "norm": nn.LayerNorm(d, eps=eps),
            "encoder": nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False),
        })
        weights = load_file(str(folder / "model.safetensors"))
        self.net.load_state_dict(_state_dict(weights, n_layers))
        self.net.to(device).eval()
        self.device = device
        self.max_length = min(max_length, int(cfg["max_position_embeddings"]))
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        pad = self.tokenizer.padding or {}
        self.tokenizer.enable_padding(pad_id=int(pad.get("pad_id", cfg.get("pad_token_id", 0))),
                                      pad_token=str(pad.get("pad_token", "[PAD]")))
        self.tokenizer.enable_truncation(self.max_length)

    @classmethod
    def load(cls, folder: Path, max_length: int, device: torch.device) -> MeanPooledBert | None:
        """The encoder of ``folder``, or ``None`` when it is not a plain BERT folder."""
        cfg = _plain_bert(folder)
        return None if cfg is None else cls(folder, cfg, max_length, device)

    def _forward(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in enc], device=self.device)
        types = torch.tensor([e.type_ids for e in enc], device=self.device)
        mask = torch.tensor([e.attention_mask for e in enc], device=self.device)
        pos = torch.arange(ids.shape[1], device=self.device)
        n = self.net
        h = n["norm"](n["word"](ids) + n["position"](pos) + n["token_type"](types))
        h = n["encoder"](h, src_key_padding_mask=mask == 0)
        m = mask.unsqueeze(-1).to(h.dtype)
        mean = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return nn.functional.normalize(mean, dim=-1)

    def encode(self, texts: list[str], batch_size: int, progress: bool) -> np.ndarray:
        """``(n, d)`` float32 embeddings, in the order of ``texts``."""
        from tqdm.auto import tqdm

        # longest first, as sentence-transformers does, so that a batch pads little
        order = np.argsort([-len(t) for t in texts], kind="stable")
        ordered = [texts[i] for i in order]
        out = [self._forward(ordered[a:a + batch_size]).float().cpu().numpy()
               for a in tqdm(range(0, len(texts), batch_size), desc="Batches",
                             disable=not progress)]
        emb = np.empty((len(texts), out[0].shape[1]), dtype=np.float32)
        emb[order] = np.concatenate(out)
        return emb
