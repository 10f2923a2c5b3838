"""What the training device can do natively, and the mixed precision `--mixed_precision=auto` picks.

`resolve_mixed_precision` is a pure function of a `DeviceDescription`, so every branch is
tested with made-up devices; `describe_device` fills the description from this machine
(`/proc/cpuinfo` flags on CPU, `tf.config.experimental.get_device_details` on GPU).

    device = hardware.describe_device("CPU")
    choice = hardware.resolve_mixed_precision("auto", device)
    choice.policy, choice.reason   # e.g. "bf16", "CPU has native bfloat16 (avx512_bf16) ..."
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import tensorflow as tf

from trainer.training import config as config_lib

# CPU flags (Linux /proc/cpuinfo spelling) of instructions that compute in bfloat16 natively.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
DEVICE_TYPES = ("CPU", "GPU", "TPU")


@dataclasses.dataclass(frozen=True)
class DeviceDescription:
    """The facts about one training device that decide its precision.

    Attributes:
      device_type: "CPU", "GPU" or "TPU".
      name: a human-readable name ("NVIDIA A100-SXM4-40GB", the CPU model name, ...).
      cpu_flags: CPU feature flags as /proc/cpuinfo spells them (CPU only).
      compute_capability: (major, minor) of an NVIDIA GPU, None when unknown or not a GPU.
    """

    device_type: str
    name: str = ""
    cpu_flags: frozenset[str] = frozenset()
    compute_capability: tuple[int, int] | None = None

    def __post_init__(self):
        if self.device_type not in DEVICE_TYPES:
            raise ValueError(
                f"DeviceDescription.device_type must be one of {DEVICE_TYPES}, got {self.device_type!r}."
            )
        if self.compute_capability is not None and (
            len(self.compute_capability) != 2 or not all(isinstance(v, int) for v in self.compute_capability)
        ):
            raise ValueError(
                "DeviceDescription.compute_capability must be None or (major, minor) integers, "
                f"got {self.compute_capability!r}."
            )


@dataclasses.dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses and why (logged, and written to the run's config.json).

    Attributes:
      requested: the `--mixed_precision` value given ("auto", "none", "bf16" or "fp16").
      policy: the precision used: "none" (float32), "bf16" or "fp16" (with loss scaling).
      reason: one sentence naming the device fact or the flag that decided.
    """

    requested: str
    policy: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class PrecisionRule:
    """One row of the table `auto` follows: the first row whose `applies` holds decides."""

    hardware: str  # What the row covers, as the reason states it.
    applies: Callable[[DeviceDescription], bool]
    policy: str
    # bf16 (or fp16) training-step images/s over fp32, where measured on such hardware
    # (benchmarks/bench_train.py and benchmarks/profile_train.py), else None.
    measured_speedup: float | None
    evidence: str


def _native_bf16_flags(device: DeviceDescription) -> list[str]:
    return [flag for flag in NATIVE_BF16_CPU_FLAGS if flag in device.cpu_flags]


def _gpu_at_least(major: int) -> Callable[[DeviceDescription], bool]:
    def applies(device: DeviceDescription) -> bool:
        capability = device.compute_capability
        return device.device_type == "GPU" and capability is not None and capability[0] >= major

    return applies


# The table `--mixed_precision=auto` follows, first matching row wins. The avx512_bf16 row's
# figure is the bf16/fp32 ratio of the images/s of the whole training loop (`fit` with
# validation, metrics and callbacks) from benchmarks/profile_train.py on a 2-core avx512_bf16 CPU
# without AMX: 221.8 / 292.3 = 0.76 for the demo profile and 1.9 / 2.5 = 0.76 for the full
# profile, the smaller taken (the bare training step alone at batch 4 had measured 1.42 in
# benchmarks/bench_train.py; in the loop at the profiles' batches bf16 lost). The AMX row and the
# GPU/TPU rows follow the vendors' documentation (bf16 tile matrix units on AMX CPUs; bf16 tensor
# cores from Ampere, compute capability 8.0; fp16-only tensor cores on Volta/Turing, 7.x; bf16
# matrix units on every TPU), unmeasured here: no such device. A CPU without those flags runs
# bf16 matmuls and convolutions by converting to fp32 and back, slower than fp32 alone.
MIXED_PRECISION_RULES: tuple[PrecisionRule, ...] = (
    PrecisionRule(
        "TPU",
        lambda d: d.device_type == "TPU",
        "bf16",
        None,
        "TPU matrix units compute in bfloat16 natively",
    ),
    PrecisionRule(
        "GPU of compute capability >= 8.0",
        _gpu_at_least(8),
        "bf16",
        None,
        "bfloat16 tensor cores (Ampere and later)",
    ),
    PrecisionRule(
        "GPU of compute capability 7.x",
        _gpu_at_least(7),
        "fp16",
        None,
        "float16 tensor cores without bfloat16; Keras scales the loss",
    ),
    PrecisionRule(
        "GPU of compute capability < 7.0 or unknown",
        lambda d: d.device_type == "GPU",
        "none",
        None,
        "no tensor cores for reduced precision",
    ),
    PrecisionRule(
        "CPU with amx_bf16",
        lambda d: d.device_type == "CPU" and "amx_bf16" in d.cpu_flags,
        "bf16",
        None,
        "bfloat16 tile matrix units (AMX)",
    ),
    PrecisionRule(
        "CPU with avx512_bf16",
        lambda d: d.device_type == "CPU" and "avx512_bf16" in d.cpu_flags,
        "none",
        0.76,
        "native bfloat16 dot products, but bf16 training was slower than float32 in the training loop",
    ),
    PrecisionRule(
        "CPU without native bfloat16",
        lambda d: d.device_type == "CPU",
        "none",
        None,
        "bfloat16 would be emulated through float32",
    ),
)


def resolve_mixed_precision(
    requested: str,
    device: DeviceDescription,
    *,
    rules: Iterable[PrecisionRule] = MIXED_PRECISION_RULES,
) -> PrecisionChoice:
    """Turns `--mixed_precision` into the precision used on `device`.

    Args:
      requested: "auto", or an explicit "none", "bf16" or "fp16" (used as given).
      device: the training device (see `describe_device`).
      rules: the table `auto` follows; the first row that applies decides.

    Returns:
      A `PrecisionChoice` with the reason.

    Raises:
      ValueError: an unknown `requested` value, or no rule covers the device.
    """
    if requested not in config_lib.MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {config_lib.MIXED_PRECISIONS}, got {requested!r}.")
    if requested != "auto":
        return PrecisionChoice(requested, requested, f"--mixed_precision={requested} given explicitly")
    for rule in rules:
        if rule.applies(device):
            what = rule.hardware
            flags = _native_bf16_flags(device)
            if device.device_type == "CPU" and flags:
                what = f"CPU with {', '.join(flags)}"
            elif device.device_type == "GPU" and device.compute_capability is not None:
                what = f"{rule.hardware} ({'.'.join(map(str, device.compute_capability))})"
            measured = f"; measured {rule.measured_speedup:.2f}x fp32" if rule.measured_speedup else ""
            named = f" {device.name}" if device.name else ""
            return PrecisionChoice("auto", rule.policy, f"{what}{named}: {rule.evidence}{measured}")
    raise ValueError(f"No mixed precision rule covers device {device!r}.")


def read_cpu_flags(cpuinfo_path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first processor in `cpuinfo_path` (empty if unreadable).

    Linux only; elsewhere (no /proc/cpuinfo) the set is empty and `auto` picks float32 on CPU.
    """
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def _cpu_model_name(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return ""


def describe_device(device_type: str) -> DeviceDescription:
    """Describes this machine's first device of `device_type` ("CPU", "GPU" or "TPU").

    Raises:
      ValueError: an unknown device type.
    """
    if device_type not in DEVICE_TYPES:
        raise ValueError(f"device_type must be one of {DEVICE_TYPES}, got {device_type!r}.")
    if device_type == "CPU":
        return DeviceDescription("CPU", name=_cpu_model_name(), cpu_flags=read_cpu_flags())
    if device_type == "GPU":
        gpus = tf.config.list_physical_devices("GPU")
        details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
        capability = details.get("compute_capability")
        return DeviceDescription(
            "GPU",
            name=str(details.get("device_name", "")),
            compute_capability=tuple(int(v) for v in capability) if capability else None,
        )
    return DeviceDescription("TPU")
