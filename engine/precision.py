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

POLICIES = ("fp32", "bf16", "int8", "mixed")
# Which linears each int8 policy quantizes: "encoder" is every encoder linear (fused Q/K/V, attention
# output, feed-forward) with attention itself, LayerNorm and embeddings in fp32; "ffn" is the
# feed-forward only. "mixed" is bf16 attention with an int8 feed-forward, for hardware with bf16 units.
INT8_SCOPES = {"int8": "encoder", "mixed": "ffn"}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
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
    kernel = default_int8_kernel(device, flags)
    via = "torch._int_mm" if kernel == "int_mm" else "the x86 dynamic quantized linear"
    if policy == "mixed":
        bf16 = _bf16_available(device, flags)
        if bf16.policy != "bf16":
            return PolicyChoice("fp32", f"mixed needs bf16: {bf16.reason}")
        return PolicyChoice("mixed", f"bf16 attention ({bf16.reason}), int8 feed-forward via {via}")
    return PolicyChoice("int8", f"int8 encoder linears via {via}")


def preferred_policies(device: torch.device, flags: Iterable[str] | None = None) -> list[str]:
    """Policies in the order this hardware runs them fastest (fp32 last), for `resolve_policy`'s fallback.

    bf16 units (CUDA, AMX, AVX512-BF16) favour bf16 and mixed; a CPU with int8 dot products (VNNI)
    and no bf16 units runs int8 about 2-3x faster than fp32 and bf16 slower than fp32 (emulated).
    """
    present = set(cpu_flags() if flags is None and device.type == "cpu" else flags or ())
    if device.type == "cuda" or cpu_has_bf16(present):
        return ["bf16", "mixed", "int8", "fp32"]
    if present & VNNI_FLAGS:
        return ["int8", "fp32"]
    return ["fp32"]


def _bf16_available(device: torch.device, flags: Iterable[str] | None) -> PolicyChoice:
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PolicyChoice("bf16", "CUDA device supports bf16")
        return PolicyChoice("fp32", "CUDA device lacks bf16")
    if cpu_has_bf16(cpu_flags() if flags is None else flags):
        return PolicyChoice("bf16", "CPU flags show avx512_bf16 or amx_bf16")
    return PolicyChoice("fp32", "CPU flags show neither avx512_bf16 nor amx_bf16")


def resolve_policy(requested: str, device: torch.device, default: str = "fp32",
                   flags: Iterable[str] | None = None, admitted: Iterable[str] = ()) -> PolicyChoice:
    """"auto" takes `default` when this hardware has it; else the fastest policy on this hardware
    among `admitted` (those whose accuracy gate passed), else fp32. An explicit policy must be available."""
    wanted = default if requested == "auto" else requested
    choice = policy_available(wanted, device, flags)
    if choice.policy == wanted:
        return choice
    if requested != "auto":
        raise PrecisionUnavailable(f"{wanted} unavailable on {device}: {choice.reason}")
    allowed = set(admitted)
    for policy in preferred_policies(device, flags):
        if policy in allowed and policy != "fp32":
            fallback = policy_available(policy, device, flags)
            if fallback.policy == policy:
                log.info("precision %s unavailable on %s (%s); using %s, whose gate passed",
                         wanted, device, choice.reason, policy)
                return PolicyChoice(policy, f"{wanted} unavailable ({choice.reason}); {fallback.reason}")
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
    """y = x W^T + b with int8 W (per output channel) and x quantized per token at call time.

    `kernel="int_mm"`: symmetric per-token activation scales and `torch._int_mm`, an int8 x int8 ->
    int32 matmul (oneDNN with VNNI on x86 CPUs, cuBLASLt on CUDA); the int32 sums are rescaled by
    token scale x channel scale. On this project's AVX512-VNNI development CPU it is the fastest
    linear of all (docs/performance.md, `python -m bench.engine --kernels`).
    `kernel="x86"`: the x86 dynamic quantized linear (one activation scale per call, made per token
    by scaling each token to absmax 1 first), kept for CPUs where `torch._int_mm` is slow.
    Float inputs of any dtype come back in that dtype (fp32 or bf16): nothing is re-cast per call
    except the activation quantization itself.
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
        self._zero_points: Tensor | None = None

    def pack(self) -> None:
        """Prepare the oneDNN or x86 kernel's packed weight; call after loading the buffers."""
        if self.kernel == "onednn":
            self._zero_points = torch.zeros(self.out_features, dtype=torch.long)
            self._packed = torch.ops.onednn.qlinear_prepack(self.weight.cpu(), None)
            return
        if self.kernel != "x86":
            return
        zero_points = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():
            # The quantized-tensor constructors are deprecated in favour of torchao; the kernel is
            # kept as the fallback for CPUs where torch._int_mm is slow.
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch._make_per_channel_quantized_tensor(
                self.weight.cpu(), self.scales.double().cpu(), zero_points, 0
            )
        self._packed = torch.ops.quantized.linear_prepack(qweight, None)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)  # (M, K)
        if self.kernel == "onednn":
            y = self._onednn(x2.float())
        else:
            y = self._x86(x2.float()) if self.kernel == "x86" else self._int_mm(x2)
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)  # (..., N)

    def _onednn(self, x2: Tensor) -> Tensor:
        # oneDNN's u8 x s8 linear (VNNI) with the channel scales applied inside the kernel. Its one
        # activation scale is made per token as in `_x86`: each token is quantized against its own
        # absmax (127 levels either side of the zero point 128), and the output is scaled back per token.
        absmax = torch.maximum(x2.amax(dim=1, keepdim=True), x2.amin(dim=1, keepdim=True).neg_()).clamp_(min=1e-8)
        xu = torch.addcmul(_U8_ZERO, x2, INT8_MAX / absmax).round_().to(torch.uint8)  # (M, K), one rounding pass
        y = torch.ops.onednn.qlinear_pointwise(xu, 1.0 / INT8_MAX, U8_ZERO_POINT, self._packed, self.scales,
                                               self._zero_points, None, 1.0, 0, torch.float32, "none", [], "")
        return torch.addcmul(self.bias, y, absmax)  # (M, N): bias + y * token absmax, one pass

    def _x86(self, x2: Tensor) -> Tensor:
        # The kernel takes one activation scale per call. Scaling every token to absmax 1 first
        # (and back after) makes that scale per token, so one outlier token no longer coarsens the rest.
        token_scales = torch.linalg.vector_norm(x2, float("inf"), dim=1, keepdim=True).clamp_(min=1e-8)  # (M, 1)
        y = torch.ops.quantized.linear_dynamic(x2 / token_scales, self._packed, _reduce_range())  # (M, N)
        return torch.addcmul(self.bias, y, token_scales)  # one pass: bias + y * scale

    def _int_mm(self, x2: Tensor) -> Tensor:
        xq, x_scales = quantize_rows(x2)  # (M, K) int8, (M, 1) float32
        acc = torch._int_mm(_pad_rows(xq), self.weight.t())[: x2.shape[0]]  # (M, N) int32
        # Two passes over the output: int32 * channel scale (promotes to fp32), then bias + . * token scale.
        return torch.addcmul(self.bias, torch.mul(acc, self.scales), x_scales)


U8_ZERO_POINT = 128  # unsigned activations for oneDNN's u8 x s8 kernel: q + 128 in [1, 255]
_U8_ZERO = torch.tensor(float(U8_ZERO_POINT))


def quantize_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-row int8: (M, K) float -> (M, K) int8 and (M, 1) float32 scales.

    |x / scale| <= 127 by construction, so rounding needs no clamp: three passes over x in all.
    """
    # Two reductions that write nothing beat one absolute-value pass (and linalg's inf-norm kernel).
    scales = torch.maximum(x.amax(dim=1, keepdim=True), x.amin(dim=1, keepdim=True).neg_()).float()
    scales = scales.clamp_(min=1e-8).div_(INT8_MAX)  # (M, 1)
    return torch.div(x, scales).round_().to(torch.int8), scales


def _pad_rows(x: Tensor) -> Tensor:
    # torch._int_mm on CUDA wants more than 16 rows and a multiple of 8; the CPU takes any shape.
    if x.device.type != "cuda":
        return x
    rows = max(32, -(-x.shape[0] // 8) * 8)
    return x if rows == x.shape[0] else torch.cat([x, x.new_zeros(rows - x.shape[0], x.shape[1])])


@functools.cache
def _onednn_int8() -> bool:
    """Whether this torch build has oneDNN's quantized linear (x86 builds with mkldnn do)."""
    built: bool = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    return built and hasattr(torch.ops.onednn, "qlinear_pointwise")


@functools.cache
def _reduce_range() -> bool:
    # Without VNNI the x86 kernel sums int8 pairs in int16, which 8-bit activations can overflow;
    # with VNNI it accumulates in int32 and the full range is safe (and twice as precise).
    return not (VNNI_FLAGS & cpu_flags())


def default_int8_kernel(device: torch.device, flags: Iterable[str] | None = None) -> str:
    """torch._int_mm on CUDA and on CPUs with int8 dot-product units (VNNI, AMX-INT8); the x86
    dynamic quantized linear on other x86 CPUs, where torch._int_mm has no fast kernel."""
    if device.type != "cpu":
        return "int_mm"
    if VNNI_FLAGS & set(cpu_flags() if flags is None else flags):
        return "onednn" if _onednn_int8() else "int_mm"
    return "x86" if "x86" in torch.backends.quantized.supported_engines else "int_mm"


def ffn_linear_names(model: nn.Module) -> list[str]:
    """Names of the feed-forward linears: each layer's intermediate.dense and output.dense."""
    return int8_linear_names(model, "ffn")


def int8_linear_names(model: nn.Module, scope: str) -> list[str]:
    """The linears an int8 policy of `scope` quantizes ("ffn" or "encoder"), in module order."""
    if scope not in ("ffn", "encoder"):
        raise ValueError(f"unknown int8 scope {scope!r}")

    def wanted(name: str) -> bool:
        if ".encoder.layer." not in f".{name}" and not name.startswith("encoder.layer."):
            return False
        ffn = name.endswith("intermediate.dense") or (name.endswith("output.dense") and "attention" not in name)
        attention = name.endswith(("attention.self.qkv", "attention.self.query", "attention.self.key",
                                   "attention.self.value", "attention.output.dense"))
        return ffn or (scope == "encoder" and attention)

    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear | Int8Linear) and wanted(name)]


def quantize_ffn_state_dict(model: nn.Module, fp32_layers: Sequence[str] = (),
                            scope: str = "ffn") -> dict[str, Tensor]:
    """Offline step: the int8 weights, scales and biases of every linear of `scope` not in `fp32_layers`."""
    out: dict[str, Tensor] = {}
    for name in int8_linear_names(model, scope):
        if name in fp32_layers:
            continue
        linear = model.get_submodule(name)
        assert isinstance(linear, nn.Linear | Int8Linear)  # int8_linear_names lists only these
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
    scope: str = INT8_SCOPES["int8"],
) -> CalibrationResult:
    """Quantize one linear of `scope` at a time; keep fp32 wherever the output error is too large.

    `run(model)` runs the calibration data and returns the outputs to compare (logits or hidden states).
    """
    reference = run(model)
    errors = {}
    for name in int8_linear_names(model, scope):
        original = model.get_submodule(name)
        convert_ffn_to_int8(model, quantize_ffn_state_dict(model, _all_but(model, name, scope), scope), kernel)
        errors[name] = _relative_error(run(model), reference)
        _set_submodule(model, name, original)
    return CalibrationResult(errors, [n for n, e in errors.items() if e > max_error])


def _all_but(model: nn.Module, keep: str, scope: str) -> list[str]:
    return [n for n in int8_linear_names(model, scope) if n != keep]


def _relative_error(outputs: list[Tensor], reference: list[Tensor]) -> float:
    diff = sum(float((o.float() - r.float()).norm() ** 2) for o, r in zip(outputs, reference, strict=True))
    norm = sum(float(r.float().norm() ** 2) for r in reference)
    # float ** float is typed Any (a negative base gives a complex); the ratio here is never negative.
    error: float = (diff / max(norm, 1e-12)) ** 0.5
    return error


def apply_policy(model: nn.Module, policy: str, device: torch.device,
                 int8_fp32_layers: Sequence[str] = ()) -> nn.Module:
    """Convert an fp32 model in place to run under `policy` on `device`.

    bf16 weights are cast once here and held; int8 weights are quantized once here. mixed casts to
    bf16 first, so its int8 layers keep fp32 scales and biases.
    """
    if policy in ("bf16", "mixed"):
        model = model.to(torch.bfloat16)
    if policy in INT8_SCOPES:
        quantized = quantize_ffn_state_dict(model, int8_fp32_layers, INT8_SCOPES[policy])
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
