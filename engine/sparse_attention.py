"""Dynamic sparse attention: 64-token local blocks plus learned global tokens, gated.

For a sequence of L tokens (padded up to Lp, a multiple of the block size) every layer computes,
per head and with `s = score(x)` a learned scalar per token:

- local branch: token i attends to the real tokens of its own block (full attention inside it);
- global branch: the top-g real tokens by `s` (by `s` plus Gumbel noise while training) are the
  layer's global tokens G; token i attends to the keys of G, whose values are scaled by
  `sigmoid(s)` so that the score receives gradients; with fewer than g real tokens all are global;
- mixing: `mixed_i = gate_i * local_i + (1 - gate_i) * global_i` with `gate = sigmoid(gate(x))`,
  one gate per token and head;
- global rows: a token in G attends to every real token of the sequence, and that full-attention
  output replaces its mixed row;
- the heads are merged and projected; rows at padding positions of the output are zero.

Everything is gathered, never masked out of an L x L matrix, so time and memory grow as
O(L * (block_size + g)) for fixed block size and g.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class SparseAttentionConfig:
    dim: int
    n_heads: int
    # 64 tokens hold the recent context short-range patterns (bursts, velocity) live in, and a
    # block that size keeps the batched SDPA kernels busy rather than dominated by overhead.
    block_size: int = 64
    # 64 global tokens match one block's worth of work per token, so the global branch costs no
    # more than the local one while still reaching any event of a 4,096-event history.
    n_global: int = 64
    # No attention dropout by default: the models that use this layer regularise elsewhere and
    # inference must be deterministic.
    dropout: float = 0.0
    # Gumbel noise added to the selection scores while training, so that tokens outside the
    # current top-g are sometimes picked and the score learns whether they help; 1.0 is the
    # standard Gumbel scale, comparable to the initial spread of the scores.
    selection_noise: float = 1.0

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
        if self.block_size < 1 or self.n_global < 1:
            raise ValueError("block_size and n_global must be positive")
        self.head_dim = self.dim // self.n_heads


def _padding_mask(mask: Tensor | None, batch: int, length: int, device: torch.device) -> Tensor:
    """Key padding mask (B, L), True for real tokens; all real when none is given."""
    if mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    return mask.to(device=device, dtype=torch.bool)


def _pad_to(x: Tensor, real: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Pad x (B, L, D) and real (B, L) at the end up to `length` with padding tokens."""
    extra = length - x.shape[1]
    if extra == 0:
        return x, real
    return F.pad(x, (0, 0, 0, extra)), F.pad(real, (0, extra), value=False)


def _never_empty(allowed: Tensor) -> Tensor:
    """Let rows with no allowed key see every key, so SDPA never returns NaN for them.

    Such rows belong to all-padding blocks or sequences; their outputs are discarded.
    """
    return allowed | ~allowed.any(dim=-1, keepdim=True)


class DynamicSparseAttention(nn.Module):
    """Multi-head self-attention with the block-local + learned-global pattern described above."""

    def __init__(self, cfg: SparseAttentionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.score = nn.Linear(cfg.dim, 1)
        self.gate = nn.Linear(cfg.dim, cfg.n_heads)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, L, D), mask (B, L) bool True for real tokens -> (B, L, D)."""
        B, L, D = x.shape
        bs, nh, hs = self.cfg.block_size, self.cfg.n_heads, self.cfg.head_dim
        Lp = -(-L // bs) * bs
        xp, real = _pad_to(x, _padding_mask(mask, B, L, x.device), Lp)  # (B, Lp, D), (B, Lp)
        qkv = self.qkv(xp).view(B, Lp, 3, nh, hs)  # (B, Lp, 3, nh, hs)

        idx, weight, slot_real = self._select_globals(xp, real)
        local = self._local(qkv, real)  # (B, Lp, nh, hs)
        glob, full = self._global(qkv, idx, weight, slot_real, real)  # (B, Lp, nh, hs), (B, g, nh, hs)
        gate = torch.sigmoid(self.gate(xp)).unsqueeze(-1)  # (B, Lp, nh, 1)
        mixed = torch.lerp(glob, local, gate)  # (B, Lp, nh, hs): gate * local + (1 - gate) * glob
        batch_idx = torch.arange(B, device=x.device).unsqueeze(1)  # (B, 1)
        # Slots past the number of real tokens point at padding rows, which are zeroed below.
        mixed.index_put_((batch_idx, idx), full)  # (B, Lp, nh, hs)
        out: Tensor = self.proj(mixed.reshape(B, Lp, D)[:, :L])  # (B, L, D)
        return out.masked_fill(~real[:, :L, None], 0.0)

    def forward_last(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """The output row of the last position only: x (B, L, D) -> (B, D), equal to forward(x, mask)[:, -1].

        Keys and values still come from every token, but the query, gate and projection are computed
        for the last position alone, so a model that reads only that row (the fraud head) skips the
        other L - 1 rows of its last layer.
        """
        B, L, D = x.shape
        bs, nh, hs = self.cfg.block_size, self.cfg.n_heads, self.cfg.head_dim
        Lp = -(-L // bs) * bs
        xp, real = _pad_to(x, _padding_mask(mask, B, L, x.device), Lp)  # (B, Lp, D), (B, Lp)
        w, b = self.qkv.weight, self.qkv.bias
        q = F.linear(x[:, -1], w[:D], b[:D]).view(B, nh, 1, hs)  # (B, nh, 1, hs)
        kv = F.linear(xp, w[D:], b[D:]).view(B, Lp, 2, nh, hs).permute(2, 0, 3, 1, 4)  # (2, B, nh, Lp, hs)
        k, v = kv.unbind(0)  # each (B, nh, Lp, hs)
        idx, weight, slot_real = self._select_globals(xp, real)
        local, glob = self._last_heads(q, k, v, (idx, weight, slot_real), real)  # each (B, nh, 1, hs)
        gate = torch.sigmoid(self.gate(x[:, -1]))[:, :, None, None]  # (B, nh, 1, 1)
        full = self._sdpa(q, k, v, _never_empty(real[:, None, None, :]))  # (B, nh, 1, hs)
        mixed = torch.lerp(glob, local, gate)  # (B, nh, 1, hs): gate * local + (1 - gate) * glob
        is_global = (idx == L - 1).any(dim=1)[:, None, None, None]  # (B, 1, 1, 1)
        out: Tensor = self.proj(torch.where(is_global, full, mixed).reshape(B, D))  # (B, D)
        return out.masked_fill(~real[:, L - 1, None], 0.0)

    def _last_heads(
        self, q: Tensor, k: Tensor, v: Tensor, globals_: tuple[Tensor, Tensor, Tensor], real: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Local and global branch of one query in the last block: q (B, nh, 1, hs), k, v (B, nh, Lp, hs)."""
        idx, weight, slot_real = globals_
        block = slice(real.shape[1] - self.cfg.block_size, None)
        local = self._sdpa(q, k[:, :, block], v[:, :, block], _never_empty(real[:, None, None, block]))
        batch_idx = torch.arange(q.shape[0], device=q.device).unsqueeze(1)  # (B, 1)
        kg = k.transpose(1, 2)[batch_idx, idx].transpose(1, 2)  # (B, nh, g, hs)
        vg = v.transpose(1, 2)[batch_idx, idx].transpose(1, 2) * weight[:, None, :, None]  # (B, nh, g, hs)
        glob = self._sdpa(q, kg, vg, _never_empty(slot_real[:, None, None, :]))  # (B, nh, 1, hs)
        return local, glob

    def _select_globals(self, xp: Tensor, real: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Top-g real tokens by learned score: indices (B, g), value weights (B, g), slot_real (B, g)."""
        s = self.score(xp).squeeze(-1).float()  # (B, Lp)
        s = s.masked_fill(~real, float("-inf"))
        g = min(self.cfg.n_global, s.shape[1])
        _, idx = self._ranking(s).topk(g, dim=1, sorted=False)  # (B, g)
        slot_real = torch.gather(real, 1, idx)  # (B, g)
        weight = torch.sigmoid(torch.gather(s, 1, idx)).masked_fill(~slot_real, 0.0)  # (B, g)
        return idx, weight.to(xp.dtype), slot_real

    def _ranking(self, s: Tensor) -> Tensor:
        """The scores top-g ranks: as they are at inference, plus Gumbel noise while training."""
        if not self.training or self.cfg.selection_noise == 0.0:
            return s
        u = torch.rand_like(s).clamp_(1e-6, 1.0 - 1e-6)
        return s - self.cfg.selection_noise * torch.log(-torch.log(u))

    def _local(self, qkv: Tensor, real: Tensor) -> Tensor:
        """Full attention inside each block: qkv (B, Lp, 3, nh, hs) -> (B, Lp, nh, hs)."""
        B, Lp, _, nh, hs = qkv.shape
        bs = self.cfg.block_size
        nb = Lp // bs
        blocks = qkv.view(B * nb, bs, 3, nh, hs).permute(2, 0, 3, 1, 4)  # (3, B*nb, nh, bs, hs)
        q, k, v = blocks.unbind(0)  # each (B*nb, nh, bs, hs)
        allowed = _never_empty(real.view(B * nb, 1, 1, bs))  # (B*nb, 1, 1, bs)
        out = self._sdpa(q, k, v, allowed)  # (B*nb, nh, bs, hs)
        return out.view(B, nb, nh, bs, hs).transpose(2, 3).reshape(B, Lp, nh, hs)

    def _global(
        self, qkv: Tensor, idx: Tensor, weight: Tensor, slot_real: Tensor, real: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Every token -> globals (B, Lp, nh, hs), and globals -> every token (B, g, nh, hs)."""
        B = qkv.shape[0]
        batch_idx = torch.arange(B, device=qkv.device).unsqueeze(1)  # (B, 1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, Lp, hs)
        qg, kg, vg = qkv[batch_idx, idx].permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, g, hs)
        vg = vg * weight[:, None, :, None]  # (B, nh, g, hs)
        to_globals = self._sdpa(q, kg, vg, _never_empty(slot_real[:, None, None, :]))  # (B, nh, Lp, hs)
        from_globals = self._sdpa(qg, k, v, _never_empty(real[:, None, None, :]))  # (B, nh, g, hs)
        return to_globals.transpose(1, 2), from_globals.transpose(1, 2)

    def _sdpa(self, q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> Tensor:
        p = self.cfg.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)


class DenseAttention(nn.Module):
    """Plain multi-head self-attention over the whole sequence: the baseline for the sparse layer."""

    def __init__(self, cfg: SparseAttentionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B, L, D), mask (B, L) bool True for real tokens -> (B, L, D)."""
        B, L, D = x.shape
        nh, hs = self.cfg.n_heads, self.cfg.head_dim
        real = _padding_mask(mask, B, L, x.device)  # (B, L)
        q, k, v = self.qkv(x).view(B, L, 3, nh, hs).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, L, hs)
        p = self.cfg.dropout if self.training else 0.0
        allowed = _never_empty(real[:, None, None, :])  # (B, 1, 1, L)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)  # (B, nh, L, hs)
        out: Tensor = self.proj(y.transpose(1, 2).reshape(B, L, D))  # (B, L, D)
        return out.masked_fill(~real[..., None], 0.0)

    def forward_last(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """The output row of the last position only: x (B, L, D) -> (B, D), equal to forward(x, mask)[:, -1]."""
        B, L, D = x.shape
        nh, hs = self.cfg.n_heads, self.cfg.head_dim
        real = _padding_mask(mask, B, L, x.device)  # (B, L)
        w, b = self.qkv.weight, self.qkv.bias
        q = F.linear(x[:, -1], w[:D], b[:D]).view(B, nh, 1, hs)  # (B, nh, 1, hs)
        k, v = F.linear(x, w[D:], b[D:]).view(B, L, 2, nh, hs).permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, L, hs)
        p = self.cfg.dropout if self.training else 0.0
        allowed = _never_empty(real[:, None, None, :])  # (B, 1, 1, L)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)  # (B, nh, 1, hs)
        out: Tensor = self.proj(y.reshape(B, D))  # (B, D)
        return out.masked_fill(~real[:, -1, None], 0.0)


ATTENTION_KINDS = ("sparse", "dense")


def make_attention(kind: str, cfg: SparseAttentionConfig) -> nn.Module:
    """Build the attention layer named by `kind` ("sparse" or "dense")."""
    if kind == "sparse":
        return DynamicSparseAttention(cfg)
    if kind == "dense":
        return DenseAttention(cfg)
    raise ValueError(f"unknown attention kind {kind!r}; expected one of {ATTENTION_KINDS}")
