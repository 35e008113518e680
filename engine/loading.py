"""Load HF-format BERT checkpoints (config.json + model.safetensors) into our modules.

Modules are built on the meta device (no random init of weights about to be replaced),
then the safetensors tensors are assigned in place of the meta parameters.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from engine.bert import BertForSequenceClassification, BertModel
from engine.config import BertConfig
from engine.errors import ModelLoadError

StateDict = dict[str, Tensor]

_BACKBONE_ROOTS = ("embeddings.", "encoder.", "pooler.")
_PREFIX = "bert."


def read_safetensors(path: str | Path) -> StateDict:
    try:
        return load_file(str(path), device="cpu")
    except (OSError, SafetensorError) as exc:
        raise ModelLoadError(f"cannot read weights {path}: {exc}") from exc


def read_checkpoint(model_dir: str | Path) -> tuple[BertConfig, StateDict]:
    model_dir = Path(model_dir)
    config = BertConfig.from_file(model_dir / "config.json")
    return config, read_safetensors(model_dir / "model.safetensors")


def backbone_keys(state_dict: StateDict) -> StateDict:
    """Keys in the `BertModel` layout, from either layout (with or without `bert.`)."""
    out = {}
    for key, value in state_dict.items():
        bare = key.removeprefix(_PREFIX)
        if bare.startswith(_BACKBONE_ROOTS):
            out[bare] = value
    return out


def classifier_keys(state_dict: StateDict) -> StateDict:
    """Keys in the `BertForSequenceClassification` layout, from either layout."""
    out = {_PREFIX + k: v for k, v in backbone_keys(state_dict).items()}
    out.update({k: v for k, v in state_dict.items() if k.startswith("classifier.")})
    return out


def _float(state_dict: StateDict, dtype: torch.dtype) -> StateDict:
    # position_ids and similar integer buffers are not ours; every kept tensor is a float weight.
    return {k: v.to(dtype) for k, v in state_dict.items() if v.is_floating_point()}


def assign_weights(model: nn.Module, state_dict: StateDict, allow_missing: tuple[str, ...] = ()) -> None:
    """Assign `state_dict` into `model`; fresh-initialise only keys under `allow_missing` prefixes."""
    result = model.load_state_dict(state_dict, strict=False, assign=True)
    if result.unexpected_keys:
        raise ModelLoadError(f"checkpoint has keys the model lacks: {sorted(result.unexpected_keys)[:5]}")
    bad = [k for k in result.missing_keys if not k.startswith(allow_missing)]
    if bad:
        raise ModelLoadError(f"checkpoint lacks weights: {sorted(bad)[:5]}")
    _init_missing(model, result.missing_keys)


def override_weights(model: nn.Module, state_dict: StateDict) -> None:
    """Replace some of a loaded model's weights (a fine-tuned subset), keeping each weight's dtype."""
    own = model.state_dict()
    unexpected = sorted(set(state_dict) - set(own))
    if unexpected:
        raise ModelLoadError(f"weights have keys the model lacks: {unexpected[:5]}")
    for key, value in state_dict.items():
        if value.shape != own[key].shape:
            raise ModelLoadError(f"{key}: shape {tuple(value.shape)}, model has {tuple(own[key].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()}, strict=False, assign=True)


def _init_missing(model: nn.Module, missing: list[str]) -> None:
    config: BertConfig = model.config  # type: ignore[assignment]
    for key in missing:
        module_name, _, param_name = key.rpartition(".")
        module = model.get_submodule(module_name)
        old = getattr(module, param_name)
        fresh = torch.empty(old.shape, dtype=torch.float32)
        if param_name == "bias":
            nn.init.zeros_(fresh)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(fresh)
        else:
            # HF BERT's own initialiser, so a fresh head trains as it would under transformers.
            nn.init.normal_(fresh, std=config.initializer_range)
        setattr(module, param_name, nn.Parameter(fresh))


def load_bert(model_dir: str | Path, dtype: torch.dtype = torch.float32) -> BertModel:
    """A `BertModel` from a directory with config.json and model.safetensors (either layout)."""
    config, raw = read_checkpoint(model_dir)
    with torch.device("meta"):
        model = BertModel(config)
    assign_weights(model, _float(backbone_keys(raw), dtype))
    return model.eval()


def load_bert_classifier(
    model_dir: str | Path,
    num_labels: int | None = None,
    pooling: str = "pooler",
    dtype: torch.dtype = torch.float32,
) -> BertForSequenceClassification:
    """A classifier from a backbone or classifier checkpoint; a missing head (or pooler) is fresh.

    Returned in train mode with gradients on, ready to fine-tune; call `.eval()` to infer.
    """
    config, raw = read_checkpoint(model_dir)
    if num_labels is not None:
        config.num_labels = num_labels
    state = _float(classifier_keys(raw), dtype)
    head = state.get("classifier.weight")
    if head is not None and head.shape[0] != config.num_labels:
        raise ModelLoadError(f"checkpoint head has {head.shape[0]} labels, asked for {config.num_labels}")
    with torch.device("meta"):
        model = BertForSequenceClassification(config, pooling=pooling)
    assign_weights(model, state, allow_missing=("classifier.", "bert.pooler."))
    return model.train()
