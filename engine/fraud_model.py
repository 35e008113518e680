"""The fraud sequence model: a small pre-LN transformer over a customer's events.

Each event becomes one token: the sum of its categorical embeddings and a projection of its
numeric features (engine.fraud_features). Sequences are left-padded to a multiple of the block
size so that the transaction to score is always the last token of the last block: its local block
is then the 63 most recent events, where card testing and velocity live, and the learned global
tokens reach further back. The head reads the last token and returns one logit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.fraud_features import CAT_VOCAB, MAX_HISTORY, N_NUMERIC
from engine.sparse_attention import DenseAttention, DynamicSparseAttention, SparseAttentionConfig, make_attention


@dataclass
class FraudModelConfig:
    # 64 wide and 2 layers: enough for the simulated patterns, small enough that three epochs
    # train in about ten minutes on two shared CPU cores (models/fraud/README.md).
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    # The usual transformer ratio; the feed-forward width is where per-event interactions live.
    ffn_mult: int = 4
    attention: str = "sparse"
    block_size: int = 64
    n_global: int = 64
    # The longest input: a full history plus the transaction.
    max_events: int = MAX_HISTORY + 1
    # No dropout: training sees each simulated customer only a few times.
    dropout: float = 0.0
    cat_vocab: tuple[int, ...] = field(default=CAT_VOCAB)
    n_numeric: int = N_NUMERIC

    def __post_init__(self) -> None:
        self.cat_vocab = tuple(self.cat_vocab)
        if self.attention not in ("sparse", "dense"):
            raise ValueError(f"attention must be 'sparse' or 'dense', not {self.attention!r}")

    def attention_config(self) -> SparseAttentionConfig:
        return SparseAttentionConfig(self.dim, self.n_heads, block_size=self.block_size, n_global=self.n_global)

    def to_json(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: Path) -> FraudModelConfig:
        return cls(**json.loads(path.read_text()))


class EventEmbedding(nn.Module):
    """Categorical ids (B, L, C) and numeric features (B, L, F) -> (B, L, D)."""

    def __init__(self, cfg: FraudModelConfig) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(v, cfg.dim, padding_idx=0) for v in cfg.cat_vocab)
        self.numeric = nn.Linear(cfg.n_numeric, cfg.dim)

    def forward(self, cat: Tensor, num: Tensor) -> Tensor:
        x: Tensor = self.numeric(num)  # (B, L, D)
        for i, table in enumerate(self.tables):
            x = x + table(cat[..., i])  # (B, L, D)
        return x


class EncoderLayer(nn.Module):
    attn: DynamicSparseAttention | DenseAttention

    def __init__(self, cfg: FraudModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.dim)
        # make_attention returns one of the two attention classes, typed as a plain nn.Module.
        self.attn = cast(DynamicSparseAttention | DenseAttention, make_attention(cfg.attention, cfg.attention_config()))
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ffn_mult * cfg.dim),
            nn.GELU(),
            nn.Linear(cfg.ffn_mult * cfg.dim, cfg.dim),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, L, D), mask (B, L) True for real events -> (B, L, D)."""
        x = x + self.drop(self.attn(self.ln1(x), mask))
        x = x + self.drop(self.ffn(self.ln2(x)))
        return x * mask.unsqueeze(-1).to(x.dtype)  # padding rows stay exactly zero

    def forward_last(self, x: Tensor, mask: Tensor) -> Tensor:
        """The last row of forward(x, mask) alone: x (B, L, D) -> (B, D)."""
        y: Tensor = x[:, -1] + self.drop(self.attn.forward_last(self.ln1(x), mask))  # (B, D)
        y = y + self.drop(self.ffn(self.ln2(y)))
        return y * mask[:, -1:].to(y.dtype)


class FraudTransformer(nn.Module):
    """(cat, num, mask) of a left-padded batch -> one fraud logit per sequence, (B,)."""

    def __init__(self, cfg: FraudModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = EventEmbedding(cfg)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.dim)
        self.head = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, 1))

    def forward(self, cat: Tensor, num: Tensor, mask: Tensor) -> Tensor:
        """cat (B, L, C) int64, num (B, L, F) float, mask (B, L) bool -> logits (B,)."""
        x = self.embed(cat, num) * mask.unsqueeze(-1).to(num.dtype)  # (B, L, D)
        for layer in self.layers[:-1]:
            x = layer(x, mask)
        # The head reads only the transaction, the last token of every row, so the last layer
        # computes that row alone.
        last_layer = cast(EncoderLayer, self.layers[-1])
        last = self.ln_f(last_layer.forward_last(x, mask))  # (B, D)
        logits: Tensor = self.head(last).squeeze(-1)  # (B,)
        return logits


def padded_length(n_events: int, block_size: int) -> int:
    """The length a batch whose longest input has n_events is padded to: whole blocks.

    Inputs that fit one block are not padded: the whole input is then one block anyway.
    """
    if n_events <= block_size:
        return n_events
    return -(-n_events // block_size) * block_size


def collate(
    items: list[tuple[Tensor, Tensor]], block_size: int, length: int | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Left-pad per-event (cat (L, C), num (L, F)) pairs -> cat (B, Lp, C), num (B, Lp, F), mask (B, Lp)."""
    longest = max(c.shape[0] for c, _ in items)
    lp = length or padded_length(longest, block_size)
    cat = torch.zeros(len(items), lp, items[0][0].shape[1], dtype=torch.long)  # (B, Lp, C)
    num = torch.zeros(len(items), lp, items[0][1].shape[1], dtype=torch.float32)  # (B, Lp, F)
    mask = torch.zeros(len(items), lp, dtype=torch.bool)  # (B, Lp)
    for b, (c, n) in enumerate(items):
        length_b = c.shape[0]
        cat[b, lp - length_b :] = c
        num[b, lp - length_b :] = n
        mask[b, lp - length_b :] = True
    return cat, num, mask


def fraud_probability(logits: Tensor) -> Tensor:
    return torch.sigmoid(logits.float())


def bce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
