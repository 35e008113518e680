"""Precision policies (fp32, bf16, int8 feed-forward) and the accuracy gate that admits them.

int8 is two steps, as in gpt-fast's quantize.py: `quantize_ffn_state_dict` makes the int8 weights
offline (per-output-channel symmetric scales), `convert_ffn_to_int8` swaps the feed-forward
`nn.Linear`s for `Int8Linear` at run time. Activations are quantized dynamically at every call.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from engine.errors import PrecisionUnavailable

log = logging.getLogger(__name__)

POLICIES = ("fp32", "bf16", "int8")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Thresholds of the accuracy gate: label agreement with fp32 and the largest accuracy drop allowed.
GATE_MIN_AGREEMENT = 0.995
GATE_MAX_ACCURACY_DROP = 0.005
# Largest relative L2 error of the model output that quantizing one feed-forward linear may cause.
# On MiniLM's last hidden state the sweep measured 1.0-2.7% per layer (median 1.4%); 2% keeps the
# outliers (layer 0's output.dense, layer 4's intermediate.dense) in fp32.
DEFAULT_INT8_MAX_ERROR = 0.02
INT8_MAX = 127  # symmetric int8: [-127, 127], so negation never overflows


@dataclass(frozen=True)
class PolicyChoice:
    policy: str
    reason: str


# --- hardware detection ---------------------------------------------------------------------


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags from /proc/cpuinfo text (read from the file when not given)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def cpu_has_bf16(flags: Iterable[str]) -> bool:
    """AVX512-BF16 or AMX-BF16 give bf16 matmuls that beat fp32; without them bf16 is emulated."""
    present = set(flags)
    return any(flag in present for flag in CPU_BF16_FLAGS)


def policy_available(policy: str, device: torch.device, flags: Iterable[str] | None = None) -> PolicyChoice:
    """Whether `policy` runs well on `device`; `reason` says why or why not."""
    if policy not in POLICIES:
        raise PrecisionUnavailable(f"unknown precision policy {policy!r}")
    if policy == "fp32":
        return PolicyChoice("fp32", "fp32 runs everywhere")
    if policy == "bf16":
        return _bf16_available(device, flags)
    kernel = default_int8_kernel(device)
    return PolicyChoice("int8", "int8 feed-forward via " + ("torch._int_mm" if kernel == "int_mm"
                                                            else "the x86 dynamic quantized linear"))


def _bf16_available(device: torch.device, flags: Iterable[str] | None) -> PolicyChoice:
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PolicyChoice("bf16", "CUDA device supports bf16")
        return PolicyChoice("fp32", "CUDA device lacks bf16")
    if cpu_has_bf16(cpu_flags() if flags is None else flags):
        return PolicyChoice("bf16", "CPU flags show avx512_bf16 or amx_bf16")
    return PolicyChoice("fp32", "CPU flags show neither avx512_bf16 nor amx_bf16")


def resolve_policy(requested: str, device: torch.device, default: str = "fp32",
                   flags: Iterable[str] | None = None) -> PolicyChoice:
    """"auto" takes `default` when this hardware has it, else fp32; an explicit policy must be available."""
    wanted = default if requested == "auto" else requested
    choice = policy_available(wanted, device, flags)
    if choice.policy != wanted:
        if requested != "auto":
            raise PrecisionUnavailable(f"{wanted} unavailable on {device}: {choice.reason}")
        log.info("precision %s unavailable on %s (%s); using fp32", wanted, device, choice.reason)
    return choice


def compute_dtype(policy: str) -> torch.dtype:
    return torch.bfloat16 if policy == "bf16" else torch.float32


# --- int8 feed-forward ----------------------------------------------------------------------


def quantize_weight(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Per-output-channel symmetric int8. (N, K) float -> (N, K) int8, (N,) float32 scales."""
    scales = weight.detach().float().abs().amax(dim=1).clamp(min=1e-8) / INT8_MAX  # (N,)
    q = torch.round(weight.detach().float() / scales[:, None]).clamp(-INT8_MAX, INT8_MAX)
    return q.to(torch.int8), scales


class Int8Linear(nn.Module):
    """y = x W^T + b with int8 W (per output channel) and x quantized at call time.

    `kernel="int_mm"`: per-token activation scales and torch._int_mm (fast on CUDA).
    `kernel="x86"`: the x86 dynamic quantized linear, one activation scale per call; on CPUs
    it is the faster of the two (docs/performance.md has the measurement).
    """

    # Buffers, registered in __init__; declared here so they read as tensors, not `Tensor | Module`.
    weight: Tensor  # (N, K) int8
    scales: Tensor  # (N,) float32
    bias: Tensor  # (N,)

    def __init__(self, in_features: int, out_features: int, kernel: str) -> None:
        super().__init__()
        self.in_features, self.out_features, self.kernel = in_features, out_features, kernel
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features))
        self._packed: object | None = None

    def pack(self) -> None:
        """Prepare the x86 kernel's packed weight; call after loading the buffers."""
        if self.kernel != "x86":
            return
        zero_points = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():
            # The quantized-tensor constructors are deprecated in favour of torchao; the kernel itself
            # is still the fastest int8 linear on this CPU, and `int_mm` is the fallback when it goes.
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch._make_per_channel_quantized_tensor(
                self.weight.cpu(), self.scales.double().cpu(), zero_points, 0
            )
        self._packed = torch.ops.quantized.linear_prepack(qweight, None)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).float()  # (B*T, K)
        y = self._x86(x2) if self.kernel == "x86" else self._int_mm(x2)
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)  # (B, T, N)

    def _x86(self, x2: Tensor) -> Tensor:
        # The kernel takes one activation scale per call. Scaling every token to absmax 1 first
        # (and back after) makes that scale per token, so one outlier token no longer coarsens the rest.
        token_scales = torch.linalg.vector_norm(x2, float("inf"), dim=1, keepdim=True).clamp_(min=1e-8)  # (M, 1)
        y = torch.ops.quantized.linear_dynamic(x2 / token_scales, self._packed, _reduce_range())  # (M, N)
        return torch.addcmul(self.bias, y, token_scales)  # one pass: bias + y * scale

    def _int_mm(self, x2: Tensor) -> Tensor:
        x_scales = x2.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / INT8_MAX  # (M, 1)
        xq = torch.round(x2 / x_scales).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)  # (M, K)
        acc = torch._int_mm(_pad_rows(xq), self.weight.t())[: x2.shape[0]]  # (M, N) int32
        return acc.float() * x_scales * self.scales + self.bias


def _pad_rows(x: Tensor) -> Tensor:
    # torch._int_mm on CUDA wants more than 16 rows and a multiple of 8.
    rows = max(32, -(-x.shape[0] // 8) * 8)
    return x if rows == x.shape[0] else torch.cat([x, x.new_zeros(rows - x.shape[0], x.shape[1])])


@functools.cache
def _reduce_range() -> bool:
    # Without VNNI the x86 kernel sums int8 pairs in int16, which 8-bit activations can overflow;
    # with VNNI it accumulates in int32 and the full range is safe (and twice as precise).
    return not ({"avx512_vnni", "avx_vnni"} & cpu_flags())


def default_int8_kernel(device: torch.device) -> str:
    """The x86 kernel on x86 CPUs (faster there); torch._int_mm on CUDA and on other CPUs."""
    if device.type == "cpu" and "x86" in torch.backends.quantized.supported_engines:
        return "x86"
    return "int_mm"


def ffn_linear_names(model: nn.Module) -> list[str]:
    """Names of the feed-forward linears: each layer's intermediate.dense and output.dense."""
    return [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear | Int8Linear)
        and (name.endswith("intermediate.dense") or (name.endswith("output.dense") and "attention" not in name))
    ]


def quantize_ffn_state_dict(model: nn.Module, fp32_layers: Sequence[str] = ()) -> dict[str, Tensor]:
    """Offline step: the int8 weights, scales and biases of every FFN linear not in `fp32_layers`."""
    out: dict[str, Tensor] = {}
    for name in ffn_linear_names(model):
        if name in fp32_layers:
            continue
        linear = model.get_submodule(name)
        assert isinstance(linear, nn.Linear | Int8Linear)  # ffn_linear_names lists only these
        out[f"{name}.weight"], out[f"{name}.scales"] = quantize_weight(linear.weight)
        out[f"{name}.bias"] = linear.bias.detach().float().clone()
    return out


def convert_ffn_to_int8(model: nn.Module, quantized: dict[str, Tensor], kernel: str) -> nn.Module:
    """Run-time step: swap each FFN linear named in `quantized` for an `Int8Linear` holding it."""
    for name in {key.rpartition(".")[0] for key in quantized}:
        old = model.get_submodule(name)
        assert isinstance(old, nn.Linear | Int8Linear)  # the keys come from quantize_ffn_state_dict
        new = Int8Linear(old.in_features, old.out_features, kernel)
        new.load_state_dict({k: quantized[f"{name}.{k}"] for k in ("weight", "scales", "bias")}, assign=True)
        new.to(old.weight.device)
        new.pack()
        _set_submodule(model, name, new)
    return model


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


@dataclass(frozen=True)
class CalibrationResult:
    errors: dict[str, float]  # relative L2 error of the model output with only that layer in int8
    fp32_layers: list[str]  # layers whose error exceeded the threshold: they stay fp32


def calibrate_int8(
    model: nn.Module,
    run: Callable[[nn.Module], list[Tensor]],
    kernel: str,
    max_error: float = DEFAULT_INT8_MAX_ERROR,
) -> CalibrationResult:
    """Quantize one FFN linear at a time; keep fp32 wherever the output error is too large.

    `run(model)` runs the calibration data and returns the outputs to compare (logits or hidden states).
    """
    reference = run(model)
    errors = {}
    for name in ffn_linear_names(model):
        original = model.get_submodule(name)
        convert_ffn_to_int8(model, quantize_ffn_state_dict(model, _all_but(model, name)), kernel)
        errors[name] = _relative_error(run(model), reference)
        _set_submodule(model, name, original)
    return CalibrationResult(errors, [n for n, e in errors.items() if e > max_error])


def _all_but(model: nn.Module, keep: str) -> list[str]:
    return [n for n in ffn_linear_names(model) if n != keep]


def _relative_error(outputs: list[Tensor], reference: list[Tensor]) -> float:
    diff = sum(float((o.float() - r.float()).norm() ** 2) for o, r in zip(outputs, reference, strict=True))
    norm = sum(float(r.float().norm() ** 2) for r in reference)
    # float ** float is typed Any (a negative base gives a complex); the ratio here is never negative.
    error: float = (diff / max(norm, 1e-12)) ** 0.5
    return error


def apply_policy(model: nn.Module, policy: str, device: torch.device,
                 int8_fp32_layers: Sequence[str] = ()) -> nn.Module:
    """Convert an fp32 model in place to run under `policy` on `device`."""
    if policy == "bf16":
        return model.to(torch.bfloat16)
    if policy == "int8":
        quantized = quantize_ffn_state_dict(model, int8_fp32_layers)
        return convert_ffn_to_int8(model, quantized, default_int8_kernel(device))
    return model


# --- accuracy gate --------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    agreement: float  # share of held-out items where the policy's label equals fp32's
    acc_fp32: float
    acc_policy: float
    passed: bool

    def as_dict(self) -> dict[str, float | bool]:
        return {"agreement": self.agreement, "acc_fp32": self.acc_fp32,
                "acc_policy": self.acc_policy, "passed": self.passed}


def accuracy_gate(fp32_labels: Sequence[int], policy_labels: Sequence[int], true_labels: Sequence[int],
                  min_agreement: float = GATE_MIN_AGREEMENT,
                  max_accuracy_drop: float = GATE_MAX_ACCURACY_DROP) -> GateResult:
    """A policy passes when it agrees with fp32 on >= 99.5% of labels and loses <= 0.5 accuracy points.

    A policy that is more accurate than fp32 is not failed for it.
    """
    n = len(true_labels)
    if n == 0 or len(fp32_labels) != n or len(policy_labels) != n:
        raise ValueError("the gate needs three label lists of the same, non-zero length")
    agreement = sum(a == b for a, b in zip(fp32_labels, policy_labels, strict=True)) / n
    acc_fp32 = sum(a == t for a, t in zip(fp32_labels, true_labels, strict=True)) / n
    acc_policy = sum(a == t for a, t in zip(policy_labels, true_labels, strict=True)) / n
    # The tiny epsilon keeps exactly-at-threshold cases (e.g. 199/200 = 0.995) from failing on rounding.
    passed = agreement >= min_agreement - 1e-12 and acc_fp32 - acc_policy <= max_accuracy_drop + 1e-12
    return GateResult(agreement, acc_fp32, acc_policy, passed)
