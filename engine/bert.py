"""BERT encoder with the Hugging Face state-dict layout, so HF checkpoints load directly.

`BertModel` holds the keys `embeddings.*`, `encoder.layer.{i}.*`, `pooler.*`;
`BertForSequenceClassification` holds `bert.*` plus `classifier.*`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import BertConfig

POOLING_MODES = ("pooler", "mean")

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


@dataclass(frozen=True)
class Packed:
    """Sequences laid end to end in one (N, H) tensor, with no padded position anywhere.

    The sequences come in runs of equal length: `runs` holds (count, length) pairs in order, so a run
    of `count` sequences of `length` tokens is one contiguous (count * length) block that attention
    views as (count, length) without padding. `positions` is each token's position within its
    sequence (N,). Build it with `Packed.of(lengths)`; lengths need not be sorted, but sorting them
    (as the triage runner does) makes runs longer and attention calls fewer.
    """

    runs: tuple[tuple[int, int], ...]
    positions: Tensor  # (N,) int64

    @classmethod
    def of(cls, lengths: Sequence[int], device: torch.device | str = "cpu") -> Packed:
        runs: list[tuple[int, int]] = []
        for length in lengths:
            if length < 1:
                raise ValueError("every packed sequence needs at least one token")
            if runs and runs[-1][1] == length:
                runs[-1] = (runs[-1][0] + 1, length)
            else:
                runs.append((1, length))
        longest = max(lengths, default=1)
        steps = torch.arange(longest)
        positions = torch.cat([steps[:length].repeat(count) for count, length in runs]) if runs else steps[:0]
        return cls(tuple(runs), positions.to(device))

    @property
    def n_sequences(self) -> int:
        return sum(count for count, _ in self.runs)

    @property
    def n_tokens(self) -> int:
        return sum(count * length for count, length in self.runs)

    @property
    def blocks(self) -> list[int]:
        """Token count of each run, for `Tensor.split`."""
        return [count * length for count, length in self.runs]


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        seq_len = input_ids.shape[1]
        positions = torch.arange(seq_len, device=input_ids.device)  # (T,)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)  # (B, T, H)
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        out: Tensor = self.dropout(self.LayerNorm(x))
        return out

    def forward_packed(self, input_ids: Tensor, packed: Packed) -> Tensor:
        """Packed ids (N,) -> (N, H); token type 0 everywhere, as single-segment inputs have."""
        x = self.word_embeddings(input_ids) + self.position_embeddings(packed.positions)  # (N, H)
        out: Tensor = self.dropout(self.LayerNorm(x + self.token_type_embeddings.weight[0]))
        return out


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.n_head = config.num_attention_heads
        self.head_dim = config.head_dim
        self.hidden_size = config.hidden_size
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.qkv: nn.Linear | None = None
        self.dropout_p = config.attention_probs_dropout_prob

    def fuse_qkv(self) -> None:
        """Replace query/key/value by one (H, 3H) projection: one matmul instead of three.

        Inference-time conversion; the module no longer has the HF key layout afterwards.
        """
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])  # (3H, H)
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])  # (3H,)
        self.qkv = nn.Linear(self.hidden_size, 3 * self.hidden_size, device=weight.device, dtype=weight.dtype)
        self.qkv.weight = nn.Parameter(weight.detach(), requires_grad=False)
        self.qkv.bias = nn.Parameter(bias.detach(), requires_grad=False)
        del self.query, self.key, self.value

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.qkv is not None:
            qkv: Tensor = self.qkv(x)  # (B, T, 3H)
            # torch.split rather than the method: it forwards to Tensor.split and, unlike it, is typed.
            q, k, v = torch.split(qkv, self.hidden_size, dim=-1)  # 3 x (B, T, H)
            return q, k, v
        return self.query(x), self.key(x), self.value(x)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        batch, seq_len, hidden = x.shape
        q, k, v = (
            t.view(batch, seq_len, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
            for t in self._project(x)
        )
        dropout_p = self.dropout_p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        return y.transpose(1, 2).reshape(batch, seq_len, hidden)  # (B, T, H)

    def forward_packed(self, x: Tensor, packed: Packed) -> Tensor:
        """(N, H) -> (N, H): each run of equal-length sequences is one mask-free SDPA call."""
        q, k, v = self._project(x)  # 3 x (N, H)
        outs = []
        blocks = packed.blocks
        for (count, length), qr, kr, vr in zip(packed.runs, torch.split(q, blocks), torch.split(k, blocks),
                                              torch.split(v, blocks), strict=True):
            qh, kh, vh = (t.reshape(count, length, self.n_head, self.head_dim).transpose(1, 2)  # (c, nh, L, hd)
                          for t in (qr, kr, vr))
            y = F.scaled_dot_product_attention(qh, kh, vh)  # (c, nh, L, hd)
            outs.append(y.transpose(1, 2).reshape(count * length, self.hidden_size))
        return outs[0] if len(outs) == 1 else torch.cat(outs)  # (N, H)


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        out: Tensor = self.LayerNorm(self.dropout(self.dense(x)) + residual)
        return out


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        out: Tensor = self.output(self.self(x, attn_mask), x)
        return out

    def forward_packed(self, x: Tensor, packed: Packed) -> Tensor:
        out: Tensor = self.output(self.self.forward_packed(x, packed), x)
        return out


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dense(x))


class BertOutput(BertSelfOutput):
    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        x = self.attention(x, attn_mask)
        out: Tensor = self.output(self.intermediate(x), x)
        return out

    def forward_packed(self, x: Tensor, packed: Packed) -> Tensor:
        """(N, H) -> (N, H): projections and feed-forward on real tokens only."""
        x = self.attention.forward_packed(x, packed)
        out: Tensor = self.output(self.intermediate(x), x)
        return out


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        for layer in self.layer:
            x = layer(x, attn_mask)
        return x

    def forward_packed(self, x: Tensor, packed: Packed) -> Tensor:
        for layer in self.layer:
            x = cast(BertLayer, layer).forward_packed(x, packed)
        return x


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H) from the [CLS] position


def pool_packed(hidden: Tensor, packed: Packed, pooling: str, pooler: BertPooler | None = None) -> Tensor:
    """(N, H) packed hidden states -> (B, H): the mean of each sequence, or the pooler at its [CLS]."""
    pieces = []
    for (count, length), block in zip(packed.runs, torch.split(hidden, packed.blocks), strict=True):
        seqs = block.view(count, length, -1)  # (c, L, H)
        pieces.append(seqs[:, 0] if pooling == "pooler" else seqs.mean(dim=1))
    pooled = pieces[0] if len(pieces) == 1 else torch.cat(pieces)  # (B, H)
    if pooling == "pooler":
        if pooler is None:
            raise ValueError("pooler pooling needs the pooler")
        return torch.tanh(pooler.dense(pooled))
    return pooled


def sdpa_mask(attention_mask: Tensor | None) -> Tensor | None:
    """(B, T) 1/0 padding mask -> (B, 1, 1, T) boolean, True where a key may be attended.

    None when nothing is padded: SDPA then takes its mask-free fast path.
    """
    if attention_mask is None or bool(attention_mask.all()):
        return None
    return attention_mask.bool()[:, None, None, :]


def mean_pool(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Average of the non-padding positions. (B, T, H) -> (B, H)."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class BertModel(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Last hidden state, (B, T, H)."""
        x = self.embeddings(input_ids, token_type_ids)
        hidden: Tensor = self.encoder(x, sdpa_mask(attention_mask))
        return hidden

    def forward_packed(self, input_ids: Tensor, packed: Packed) -> Tensor:
        """Last hidden state of packed ids (N,), as (N, H): no padded position is computed."""
        hidden: Tensor = self.encoder.forward_packed(self.embeddings.forward_packed(input_ids, packed), packed)
        return hidden


class BertForSequenceClassification(nn.Module):
    """HF layout; `pooling="mean"` classifies the masked mean instead of the tanh pooler output."""

    def __init__(self, config: BertConfig, pooling: str = "pooler") -> None:
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, not {pooling!r}")
        self.config = config
        self.pooling = pooling
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def pool(self, hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
        if self.pooling == "pooler":
            pooled: Tensor = self.bert.pooler(hidden)  # (B, H)
            return pooled
        return mean_pool(hidden, attention_mask)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Logits, (B, num_labels)."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        logits: Tensor = self.classifier(self.dropout(self.pool(hidden, attention_mask)))
        return logits

    def forward_packed(self, input_ids: Tensor, packed: Packed) -> Tensor:
        """Logits (B, num_labels) of packed ids (N,), one row per sequence in packing order."""
        hidden = self.bert.forward_packed(input_ids, packed)
        logits: Tensor = self.classifier(self.dropout(pool_packed(hidden, packed, self.pooling, self.bert.pooler)))
        return logits
