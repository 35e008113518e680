"""BERT encoder with the Hugging Face state-dict layout, so HF checkpoints load directly.

`BertModel` holds the keys `embeddings.*`, `encoder.layer.{i}.*`, `pooler.*`;
`BertForSequenceClassification` holds `bert.*` plus `classifier.*`.
"""

from __future__ import annotations

from collections.abc import Callable

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


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))

    def forward(self, x: Tensor, attn_mask: Tensor | None) -> Tensor:
        for layer in self.layer:
            x = layer(x, attn_mask)
        return x


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H) from the [CLS] position


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
