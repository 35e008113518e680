"""Dynamic sparse attention against a dense-mask oracle of the same pattern.

The oracle below is written from the pattern's definition (engine/sparse_attention.py module
docstring), one sequence at a time, in float64, with explicit L x L allowed-masks and plain
softmax attention; it shares only the parameters with the module under test.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from engine.sparse_attention import (
    DenseAttention,
    DynamicSparseAttention,
    SparseAttentionConfig,
    make_attention,
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These small ops run faster on one thread than on cores shared with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """q, k, v (nh, L, hs), allowed (L, L) query x key -> (nh, L, hs)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1).nan_to_num(0.0) @ v


def _oracle_one(m: DynamicSparseAttention, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """x (L, D) float64, real (L,) bool -> (L, D) float64."""
    cfg = m.cfg
    w = {name: p.detach().double() for name, p in m.named_parameters()}
    L, D = x.shape
    nh, hs = cfg.n_heads, D // cfg.n_heads
    q, k, v = (x @ w["qkv.weight"].T + w["qkv.bias"]).split(D, dim=-1)
    q, k, v = (t.view(L, nh, hs).transpose(0, 1) for t in (q, k, v))
    s = x @ w["score.weight"][0] + w["score.bias"][0]
    real_pos = real.nonzero().squeeze(1)
    chosen = real_pos[torch.argsort(s[real_pos], descending=True)[: cfg.n_global]]
    is_global = torch.zeros(L, dtype=torch.bool)
    is_global[chosen] = True

    pos = torch.arange(L)
    same_block = (pos[:, None] // cfg.block_size) == (pos[None, :] // cfg.block_size)
    local = _attend(q, k, v, same_block & real[None, :])
    glob = _attend(q, k, v * torch.sigmoid(s)[None, :, None], is_global[None, :].expand(L, L))
    full = _attend(q, k, v, real[None, :].expand(L, L))
    gate = torch.sigmoid(x @ w["gate.weight"].T + w["gate.bias"]).T[:, :, None]
    mixed = gate * local + (1 - gate) * glob
    mixed = torch.where(is_global[None, :, None], full, mixed)
    y = mixed.transpose(0, 1).reshape(L, D) @ w["proj.weight"].T + w["proj.bias"]
    return torch.where(real[:, None], y, torch.zeros_like(y))


def _oracle(m: DynamicSparseAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.stack([_oracle_one(m, x[b].double(), mask[b]) for b in range(x.shape[0])])


def _module(dim: int, n_heads: int, block_size: int, n_global: int, seed: int = 0) -> DynamicSparseAttention:
    torch.manual_seed(seed)
    cfg = SparseAttentionConfig(dim=dim, n_heads=n_heads, block_size=block_size, n_global=n_global)
    return DynamicSparseAttention(cfg).eval()


def _assert_matches_oracle(m: DynamicSparseAttention, x: torch.Tensor, mask: torch.Tensor) -> None:
    with torch.no_grad():
        got = m(x, mask).double()
    want = _oracle(m, x, mask)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_one_block_globals_inside_their_own_block_with_padding() -> None:
    m = _module(dim=32, n_heads=4, block_size=64, n_global=8)
    x = torch.randn(2, 64, 32)
    mask = torch.ones(2, 64, dtype=torch.bool)
    mask[1, 10:20] = False
    mask[1, 60:] = False
    _assert_matches_oracle(m, x, mask)


def test_l1000_ragged_length_holes_empty_block_and_short_sequence() -> None:
    m = _module(dim=32, n_heads=4, block_size=64, n_global=64, seed=1)
    x = torch.randn(3, 1000, 32)
    mask = torch.rand(3, 1000) > 0.2  # holes inside blocks
    mask[0, 128:192] = False  # one block with no real token
    mask[0, 990:] = False  # padding inside the last, partial block
    mask[1, 40:] = False  # fewer real tokens than global slots
    _assert_matches_oracle(m, x, mask)


def test_l4096_matches_oracle() -> None:
    m = _module(dim=16, n_heads=2, block_size=64, n_global=64, seed=2)
    x = torch.randn(1, 4096, 16)
    mask = torch.ones(1, 4096, dtype=torch.bool)
    mask[0, 4000:] = False
    mask[0, 100:110] = False
    _assert_matches_oracle(m, x, mask)


def test_no_mask_means_all_tokens_real() -> None:
    m = _module(dim=32, n_heads=4, block_size=16, n_global=4)
    x = torch.randn(2, 70, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x, torch.ones(2, 70, dtype=torch.bool)))
    _assert_matches_oracle(m, x, torch.ones(2, 70, dtype=torch.bool))


def test_all_padding_sequence_is_finite_and_zero() -> None:
    m = _module(dim=32, n_heads=4, block_size=16, n_global=4)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1] = False
    with torch.no_grad():
        y = m(torch.randn(2, 40, 32), mask)
    assert torch.isfinite(y).all()
    assert (y[1] == 0).all()


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operator returns."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_no_length_squared_tensor_on_the_fast_path() -> None:
    L = 4096
    m = _module(dim=16, n_heads=2, block_size=64, n_global=64)
    x = torch.randn(1, L, 16, requires_grad=True)
    with _LargestTensor() as seen:
        m(x, torch.ones(1, L, dtype=torch.bool)).sum().backward()
    # Per head the pattern holds L * (block_size + 2 * n_global) scores; L * L would be 16x more.
    assert seen.numel <= 2 * L * (64 + 2 * 64)


def test_selection_explores_only_while_training() -> None:
    m = _module(dim=32, n_heads=4, block_size=16, n_global=4)
    x = torch.randn(1, 256, 32)
    with torch.no_grad():
        assert torch.equal(m(x), m(x))
        m.train()
        assert not torch.equal(m(x), m(x))


def test_gradients_reach_every_parameter_and_the_input() -> None:
    m = _module(dim=32, n_heads=4, block_size=16, n_global=8).train()
    x = torch.randn(2, 100, 32, requires_grad=True)
    mask = torch.ones(2, 100, dtype=torch.bool)
    mask[1, 70:] = False
    (m(x, mask) ** 2).sum().backward()
    for name, p in [*m.named_parameters(), ("input", x)]:
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_bf16_forward_and_backward_on_cpu() -> None:
    m = _module(dim=32, n_heads=4, block_size=16, n_global=8)
    x = torch.randn(2, 100, 32)
    with torch.no_grad():
        want = m(x)
    m16 = m.to(torch.bfloat16)
    x16 = x.to(torch.bfloat16).requires_grad_()
    got = m16(x16)
    assert got.dtype == torch.bfloat16
    assert torch.isfinite(got).all()
    # bf16 keeps ~3 significant digits; a near-tie in the score may also swap one global token.
    assert (got.float() - want).abs().mean() < 2e-2
    got.float().sum().backward()
    assert torch.isfinite(x16.grad).all()


def test_dense_attention_is_masked_softmax_attention() -> None:
    torch.manual_seed(0)
    cfg = SparseAttentionConfig(dim=32, n_heads=4)
    m = DenseAttention(cfg).eval()
    x = torch.randn(2, 50, 32)
    mask = torch.ones(2, 50, dtype=torch.bool)
    mask[0, 45:] = False
    with torch.no_grad():
        got = m(x, mask)
        q, k, v = m.qkv(x).view(2, 50, 3, 4, 8).permute(2, 0, 3, 1, 4)
        allowed = mask[:, None, None, :].expand(2, 1, 50, 50)
        y = torch.stack([_attend(q[b], k[b], v[b], allowed[b, 0]) for b in range(2)])
        want = m.proj(y.transpose(1, 2).reshape(2, 50, 32)) * mask[..., None]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("length", [40, 64, 200, 1000])
def test_forward_last_is_the_last_row_of_forward(length: int) -> None:
    m = _module(dim=32, n_heads=4, block_size=64, n_global=8, seed=3)
    x = torch.randn(4, length, 32)
    mask = torch.ones(4, length, dtype=torch.bool)
    mask[1, : length - 5] = False  # fewer real tokens than global slots: the last one is global
    mask[2, -1] = False  # the last position is padding
    mask[3, length // 3 :: 7] = False  # holes
    with torch.no_grad():
        x[3, -1] = 10 * m.score.weight[0]  # the top score: the last position is a global token
        torch.testing.assert_close(m.forward_last(x, mask), m(x, mask)[:, -1], atol=1e-5, rtol=0)
        torch.testing.assert_close(m.forward_last(x), m(x)[:, -1], atol=1e-5, rtol=0)


def test_dense_forward_last_is_the_last_row_of_forward() -> None:
    torch.manual_seed(0)
    m = DenseAttention(SparseAttentionConfig(dim=32, n_heads=4)).eval()
    x = torch.randn(3, 70, 32)
    mask = torch.ones(3, 70, dtype=torch.bool)
    mask[0, :30] = False
    mask[1, -1] = False
    with torch.no_grad():
        torch.testing.assert_close(m.forward_last(x, mask), m(x, mask)[:, -1], atol=1e-5, rtol=0)


def test_factory_and_config_validation() -> None:
    cfg = SparseAttentionConfig(dim=32, n_heads=4)
    assert isinstance(make_attention("sparse", cfg), DynamicSparseAttention)
    assert isinstance(make_attention("dense", cfg), DenseAttention)
    with pytest.raises(ValueError):
        make_attention("linear", cfg)
    with pytest.raises(ValueError):
        SparseAttentionConfig(dim=30, n_heads=4)


class _PointerModel(torch.nn.Module):
    """Embedding -> one sparse attention layer -> read the last token."""

    def __init__(self, vocab: int, dim: int, cfg: SparseAttentionConfig) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.attn = DynamicSparseAttention(cfg)
        self.head = torch.nn.Linear(dim, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        return self.head((h + self.attn(h))[:, -1])


def _pointer_batch(n: int, length: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise tokens with one marker (token 0 or 1) far outside the last token's block; label = marker."""
    tokens = torch.randint(2, 16, (n, length))
    labels = torch.randint(0, 2, (n,))
    where = torch.randint(0, length - block_size, (n,))
    tokens[torch.arange(n), where] = labels
    return tokens, labels


def _loss(model: _PointerModel, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    tokens, labels = batch
    return F.cross_entropy(model(tokens), labels)


def test_learns_a_task_that_needs_long_range_information() -> None:
    torch.manual_seed(0)
    length, block = 64, 16
    cfg = SparseAttentionConfig(dim=32, n_heads=2, block_size=block, n_global=4)
    model = _PointerModel(vocab=16, dim=32, cfg=cfg)
    held_out = _pointer_batch(256, length, block)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        before = _loss(model.eval(), held_out).item()
    model.train()
    for _ in range(150):
        loss = _loss(model, _pointer_batch(32, length, block))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = _loss(model.eval(), held_out).item()
    # Chance is ln 2 = 0.69: the marker is never in the readout token's block, so only the global
    # branch, through a selection it has to learn, can carry it.
    assert before > 0.6
    assert after < 0.1
