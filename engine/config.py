"""BERT-family configuration parsed from a Hugging Face `config.json`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ModelLoadError

SUPPORTED_MODEL_TYPES = ("bert",)
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")


@dataclass
class BertConfig:
    # Defaults are bert-base's, so a config.json that omits a field means what it means in HF.
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    model_type: str = "bert"
    position_embedding_type: str = "absolute"
    num_labels: int = 2
    head_dim: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelLoadError(f"model_type {self.model_type!r} is not a supported BERT-family type")
        if self.position_embedding_type != "absolute":
            raise ModelLoadError(f"position_embedding_type {self.position_embedding_type!r} is not supported")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ModelLoadError(f"hidden_act {self.hidden_act!r} is not supported")
        if self.hidden_size % self.num_attention_heads:
            raise ModelLoadError("hidden_size must be a multiple of num_attention_heads")
        self.head_dim = self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BertConfig:
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        values = {k: v for k, v in raw.items() if k in known}
        if "num_labels" not in raw and isinstance(raw.get("id2label"), dict):
            values["num_labels"] = len(raw["id2label"])
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> BertConfig:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"cannot read config {path}: {exc}") from exc
        return cls.from_dict(raw)
