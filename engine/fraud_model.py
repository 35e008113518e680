"""The fraud model: a small pre-LN transformer over a customer's events, fused with card aggregates.

Each event becomes one token: the sum of its categorical embeddings and a projection of its
numeric features (engine.fraud_features). Sequences are left-padded to a multiple of the block
size so that the transaction to score is always the last token of the last block: its local block
is then the 63 most recent events, where card testing and velocity live, and the learned global
tokens reach further back.

The head reads up to three things: the transaction's last-layer token (the sequence encoder), a
merchant memory (a learned risk per merchant bucket, its maximum over the history's events: a card
that visited a merchant known to leak card data), and an embedding of the card's aggregates
(engine.fraud_aggregates, standardised with the training set's mean and spread, stored with the
weights). `use_sequence` and `n_aggregates` select the parts, so the ablations are the same class.
`explain` adds gradient x input attributions over events and aggregates.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.fraud_features import CAT_FIELDS, CAT_VOCAB, MAX_HISTORY, N_NUMERIC
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
    # The hybrid's parts: the event sequence (transformer and merchant memory) and the card
    # aggregates (engine.fraud_aggregates.N_AGGREGATES of them; 0 for none).
    use_sequence: bool = True
    merchant_memory: bool = False
    n_aggregates: int = 0

    def __post_init__(self) -> None:
        self.cat_vocab = tuple(self.cat_vocab)
        if self.attention not in ("sparse", "dense"):
            raise ValueError(f"attention must be 'sparse' or 'dense', not {self.attention!r}")
        if not self.use_sequence and self.n_aggregates <= 0:
            raise ValueError("a model without the sequence needs aggregates")

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


_MERCHANT = CAT_FIELDS.index("merchant")


class FraudTransformer(nn.Module):
    """(cat, num, mask) of a left-padded batch and the card aggregates -> one fraud logit per row, (B,)."""

    # Training-set mean and spread of each aggregate (buffers, saved with the weights).
    agg_mean: Tensor
    agg_std: Tensor

    def __init__(self, cfg: FraudModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width = 0
        if cfg.use_sequence:
            self.embed = EventEmbedding(cfg)
            self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_layers))
            self.ln_f = nn.LayerNorm(cfg.dim)
            width += cfg.dim
        if cfg.merchant_memory:
            self.merchant_risk = nn.Embedding(cfg.cat_vocab[_MERCHANT], 1)
            nn.init.constant_(self.merchant_risk.weight, -4.0)  # softplus: about 0.02 everywhere
            width += 1
        if cfg.n_aggregates:
            self.register_buffer("agg_mean", torch.zeros(cfg.n_aggregates))
            self.register_buffer("agg_std", torch.ones(cfg.n_aggregates))
            self.agg_net = nn.Sequential(
                nn.Linear(cfg.n_aggregates, 2 * cfg.dim), nn.GELU(), nn.Linear(2 * cfg.dim, cfg.dim)
            )
            width += cfg.dim
        self.head = nn.Sequential(nn.Linear(width, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, 1))

    def set_aggregate_scale(self, mean: Tensor, std: Tensor) -> None:
        """Standardise aggregates with these (training-set) statistics, (A,) each."""
        self.agg_mean.copy_(mean)
        self.agg_std.copy_(std.clamp(min=1e-3))

    def forward(self, cat: Tensor, num: Tensor, mask: Tensor, agg: Tensor | None = None) -> Tensor:
        """cat (B, L, C) int64, num (B, L, F) float, mask (B, L) bool, agg (B, A) float -> logits (B,)."""
        x0, memory, z = self._inputs(cat, num, mask, agg)
        return self._logits(x0, memory, mask, z)

    def explain(
        self, cat: Tensor, num: Tensor, mask: Tensor, agg: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Logits (B,), gradient x input per event (B, L) and per standardised aggregate (B, A).

        An event's attribution sums its token embedding's gradient x input and its share of the
        merchant memory (the event whose merchant is the riskiest carries it); positive values push
        the score towards fraud.
        """
        # Callers may hold inference mode; clones made outside it can take part in autograd.
        with torch.inference_mode(False), torch.enable_grad():
            cat, num, mask = cat.clone(), num.clone(), mask.clone()
            agg = None if agg is None else agg.clone()
            x0, memory, z = (t.detach().requires_grad_() if t is not None else None
                             for t in self._inputs(cat, num, mask, agg))
            logits = self._logits(x0, memory, mask, z)
            wrt = [t for t in (x0, memory, z) if t is not None]
            grads = dict(zip((id(t) for t in wrt), torch.autograd.grad(logits.float().sum(), wrt), strict=True))
        events = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)  # (B, L)
        for t in (x0, memory):
            if t is not None:
                events = events + (grads[id(t)] * t).float().reshape(*mask.shape, -1).sum(-1)
        aggregates = None if z is None else (grads[id(z)] * z).float().detach()
        return logits.detach(), (events * mask).detach(), aggregates

    def _inputs(
        self, cat: Tensor, num: Tensor, mask: Tensor, agg: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x0 = memory = z = None
        if self.cfg.use_sequence:
            x0 = self.embed(cat, num) * mask.unsqueeze(-1).to(num.dtype)  # (B, L, D)
        if self.cfg.merchant_memory:
            history = mask.clone()
            history[:, -1] = False  # the transaction's own merchant is not a memory
            # Positive, so padding and the transaction (zeros) never win the maximum.
            risk = F.softplus(self.merchant_risk(cat[..., _MERCHANT]).squeeze(-1))  # (B, L)
            memory = torch.where(history, risk, torch.zeros_like(risk))
        if self.cfg.n_aggregates:
            if agg is None:
                raise ValueError("this model needs the card aggregates")
            z = (agg.to(self.agg_mean.dtype) - self.agg_mean) / self.agg_std  # (B, A)
        return x0, memory, z

    def _logits(self, x0: Tensor | None, memory: Tensor | None, mask: Tensor, z: Tensor | None) -> Tensor:
        parts = []
        if x0 is not None:
            x = x0
            for layer in self.layers[:-1]:
                x = layer(x, mask)
            # The head reads only the transaction, the last token of every row, so the last layer
            # computes that row alone.
            last_layer = cast(EncoderLayer, self.layers[-1])
            parts.append(self.ln_f(last_layer.forward_last(x, mask)))  # (B, D)
        if memory is not None:
            parts.append(memory.max(dim=1, keepdim=True).values)  # (B, 1)
        if z is not None:
            parts.append(self.agg_net(z))  # (B, D)
        logits: Tensor = self.head(torch.cat(parts, dim=-1)).squeeze(-1)  # (B,)
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
