"""Token-budget batch planning and overlapping chunking of long token sequences."""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(lengths: Sequence[int], token_budget: int, max_batch_size: int) -> list[list[int]]:
    """Group item indices into batches whose padded cost (longest x count) fits `token_budget`.

    Items are taken longest first, so the first item of a batch fixes its padded length and
    neighbours in a batch have similar lengths (little padding). An item longer than the budget
    gets a batch of its own rather than being refused.
    """
    if token_budget < 1 or max_batch_size < 1:
        raise ValueError("token_budget and max_batch_size must be positive")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current and not _fits(lengths[current[0]], len(current) + 1, token_budget, max_batch_size):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def _fits(longest: int, count: int, token_budget: int, max_batch_size: int) -> bool:
    return count <= max_batch_size and longest * count <= token_budget


def padded_cost(lengths: Sequence[int], batch: Sequence[int]) -> int:
    return max(lengths[i] for i in batch) * len(batch)


def chunk_ids(ids: Sequence[int], cls_id: int, sep_id: int, max_len: int = 512, stride: int = 128) -> list[list[int]]:
    """Split token ids (without specials) into windows of at most `max_len` with [CLS]/[SEP] re-added.

    Consecutive windows share `stride` tokens (the HF tokenizers meaning of stride), so a phrase cut
    at one window's edge is whole in the next. The last window ends at the last token; nothing is cut.
    """
    body = max_len - 2  # room left for [CLS] and [SEP]
    if not 0 <= stride < body:
        raise ValueError(f"stride must be in [0, {body}) for max_len {max_len}")
    return [[cls_id, *ids[start : start + body], sep_id] for start in window_starts(len(ids), body, stride)]


def window_starts(n_tokens: int, body: int, stride: int) -> list[int]:
    if n_tokens <= body:
        return [0]
    step = body - stride
    starts = list(range(0, n_tokens - body, step))
    starts.append(n_tokens - body)  # a full last window, aligned to the end
    return starts
