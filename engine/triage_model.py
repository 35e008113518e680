"""The triage classifier: a BERT encoder over the note, fused with the structured fields as numbers.

A nurse's vitals decide many ESI levels through thresholds that depend on age (a heart rate of 150
is a danger-zone vital at 30 years and normal at 6 months). Word pieces of numbers are a poor way
to learn such thresholds, so the structured fields of the request (age and vitals, see
`engine.triage_input.structured_features`) also enter the model as numbers: a small MLP encodes
them and a two-layer head classifies the pooled text together with that encoding. Vitals written
only inside the note are read by the encoder, as before.

Keys: `bert.*` in the HF `BertModel` layout, `structured.*` and `head.*` for the fusion.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from engine.bert import POOLING_MODES, BertModel, Packed, mean_pool, pool_packed
from engine.config import BertConfig
from engine.loading import assign_weights, backbone_keys, read_checkpoint


class TriageClassifier(nn.Module):
    def __init__(self, config: BertConfig, n_structured: int, structured_hidden: int = 64,
                 head_hidden: int = 128, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, not {pooling!r}")
        self.config = config
        self.pooling = pooling
        self.n_structured = n_structured
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.structured = nn.Sequential(
            nn.Linear(n_structured, structured_hidden), nn.GELU(),
            nn.Linear(structured_hidden, structured_hidden), nn.GELU(),
        )
        self.head = nn.Sequential(
            nn.Linear(config.hidden_size + structured_hidden, head_hidden), nn.GELU(),
            nn.Linear(head_hidden, config.num_labels),
        )

    def pool(self, hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
        if self.pooling == "pooler":
            pooled: Tensor = self.bert.pooler(hidden)  # (B, H)
            return pooled
        return mean_pool(hidden, attention_mask)

    def classify(self, pooled: Tensor, structured: Tensor | None) -> Tensor:
        """Logits from the pooled text (B, H) and the structured features (B, S); None means absent."""
        if structured is None:
            structured = pooled.new_zeros(pooled.shape[0], self.n_structured)
        fused = torch.cat([self.dropout(pooled), self.structured(structured.to(pooled.dtype))], dim=-1)
        logits: Tensor = self.head(fused)  # (B, num_labels)
        return logits

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                structured: Tensor | None = None) -> Tensor:
        """Logits, (B, num_labels)."""
        hidden = self.bert(input_ids, attention_mask)
        return self.classify(self.pool(hidden, attention_mask), structured)

    def forward_packed(self, input_ids: Tensor, packed: Packed, structured: Tensor | None = None) -> Tensor:
        """Logits (B, num_labels) of packed ids (N,); `structured` (B, S) in the same sequence order."""
        hidden = self.bert.forward_packed(input_ids, packed)  # (N, H)
        return self.classify(pool_packed(hidden, packed, self.pooling, self.bert.pooler), structured)


def load_triage_classifier(backbone_dir: str | Path, num_labels: int, n_structured: int, structured_hidden: int = 64,
                           head_hidden: int = 128, pooling: str = "mean") -> TriageClassifier:
    """A classifier on a backbone checkpoint; the fusion MLP and head start fresh (HF's initialiser).

    Returned in train mode; call `.eval()` to infer.
    """
    config, raw = read_checkpoint(backbone_dir)
    config.num_labels = num_labels
    state = {f"bert.{k}": v.float() for k, v in backbone_keys(raw).items() if v.is_floating_point()}
    with torch.device("meta"):
        model = TriageClassifier(config, n_structured, structured_hidden, head_hidden, pooling)
    assign_weights(model, state, allow_missing=("structured.", "head.", "bert.pooler."))
    # PyTorch's own initialiser for the fusion layers: BERT's N(0, 0.02) suits a linear head over
    # LayerNorm-ed features, but leaves a fresh two-layer MLP over 16 raw numbers nearly silent.
    for module in (*model.structured, *model.head):
        if isinstance(module, nn.Linear):
            module.reset_parameters()
    return model.train()
