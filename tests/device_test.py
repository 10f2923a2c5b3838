"""Tests for trainer/training/device.py: the mixed precision `auto` picks, on made-up devices."""

import os
from unittest import mock

import tensorflow as tf
from absl.testing import parameterized

from trainer.training import device as hardware

_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Example CPU @ 2.10GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile
processor\t: 1
flags\t\t: fpu sse2
"""


def _cpu(*flags):
    return hardware.DeviceDescription("CPU", cpu_flags=frozenset(flags))


def _gpu(capability, name=""):
    return hardware.DeviceDescription("GPU", name=name, compute_capability=capability)


class ResolveMixedPrecisionTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("cpu_avx512_bf16", _cpu("avx2", "avx512f", "avx512_bf16"), "none", "CPU with avx512_bf16.*slower"),
        ("cpu_avx512_bf16_and_amx", _cpu("avx512_bf16", "amx_bf16", "amx_tile"), "bf16", "AMX"),
        ("cpu_amx_bf16", _cpu("avx2", "amx_bf16", "amx_tile"), "bf16", "CPU with amx_bf16"),
        ("cpu_avx512_without_bf16", _cpu("avx2", "avx512f"), "none", "CPU without native bfloat16"),
        ("cpu_no_flags", _cpu(), "none", "emulated"),
        ("a100", _gpu((8, 0), "NVIDIA A100-SXM4-40GB"), "bf16", r"capability >= 8.0 \(8.0\) NVIDIA A100"),
        ("h100", _gpu((9, 0)), "bf16", "bfloat16 tensor cores"),
        ("t4", _gpu((7, 5), "Tesla T4"), "fp16", r"capability 7.x \(7.5\) Tesla T4.*scales the loss"),
        ("v100", _gpu((7, 0)), "fp16", "float16 tensor cores"),
        ("p100", _gpu((6, 0)), "none", "no tensor cores"),
        ("gpu_unknown_capability", _gpu(None), "none", "unknown"),
        ("tpu", hardware.DeviceDescription("TPU"), "bf16", "TPU"),
    )
    def test_auto(self, device, policy, reason):
        choice = hardware.resolve_mixed_precision("auto", device)
        self.assertEqual(choice.policy, policy)
        self.assertEqual(choice.requested, "auto")
        self.assertRegex(choice.reason, reason)

    def test_measured_cpu_figure_is_in_the_reason(self):
        rule = next(r for r in hardware.MIXED_PRECISION_RULES if r.applies(_cpu("avx512_bf16")))
        choice = hardware.resolve_mixed_precision("auto", _cpu("avx512_bf16"))
        self.assertIn(f"measured {rule.measured_speedup:.2f}x fp32", choice.reason)

    def test_measured_rows_pick_reduced_precision_only_where_it_was_faster(self):
        for rule in hardware.MIXED_PRECISION_RULES:
            if rule.measured_speedup is not None:
                self.assertEqual(rule.policy != "none", rule.measured_speedup > 1, rule.hardware)

    @parameterized.parameters("none", "bf16", "fp16")
    def test_explicit_choice_is_kept_on_any_device(self, requested):
        for device in (_cpu(), _gpu((6, 0)), hardware.DeviceDescription("TPU")):
            choice = hardware.resolve_mixed_precision(requested, device)
            self.assertEqual(choice.policy, requested)
            self.assertIn(f"--mixed_precision={requested} given explicitly", choice.reason)

    def test_choice_serializes_for_config_json(self):
        choice = hardware.resolve_mixed_precision("auto", _cpu())
        self.assertEqual(choice.to_dict(), {"requested": "auto", "policy": "none", "reason": choice.reason})

    def test_unknown_request(self):
        with self.assertRaisesRegex(ValueError, r"mixed_precision must be one of .*got 'fp8'"):
            hardware.resolve_mixed_precision("fp8", _cpu())

    def test_device_no_rule_covers(self):
        with self.assertRaisesRegex(ValueError, "No mixed precision rule covers"):
            hardware.resolve_mixed_precision("auto", _cpu(), rules=())


class DeviceDescriptionTest(tf.test.TestCase):
    def test_bad_fields(self):
        with self.assertRaisesRegex(ValueError, r"device_type must be one of .*got 'NPU'"):
            hardware.DeviceDescription("NPU")
        with self.assertRaisesRegex(ValueError, r"compute_capability must be .*got \(8,\)"):
            hardware.DeviceDescription("GPU", compute_capability=(8,))

    def test_read_cpu_flags_takes_the_first_processor(self):
        path = os.path.join(self.get_temp_dir(), "cpuinfo")
        with open(path, "w") as f:
            f.write(_CPUINFO)
        flags = hardware.read_cpu_flags(path)
        self.assertIn("avx512_bf16", flags)
        self.assertNotIn("fpu sse2", flags)
        self.assertEqual(len(flags), 6)

    def test_read_cpu_flags_missing_file_is_empty(self):
        self.assertEqual(hardware.read_cpu_flags(os.path.join(self.get_temp_dir(), "absent")), frozenset())

    def test_describe_this_cpu(self):
        device = hardware.describe_device("CPU")
        self.assertEqual(device.device_type, "CPU")
        self.assertEqual(device.cpu_flags, hardware.read_cpu_flags())
        # Whatever this machine is, `auto` decides for it with a reason.
        self.assertIn(hardware.resolve_mixed_precision("auto", device).policy, ("bf16", "none"))

    def test_describe_gpu_from_device_details(self):
        gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
        details = {"compute_capability": (7, 5), "device_name": "Tesla T4"}
        with (
            mock.patch.object(tf.config, "list_physical_devices", return_value=[gpu]),
            mock.patch.object(tf.config.experimental, "get_device_details", return_value=details),
        ):
            device = hardware.describe_device("GPU")
        self.assertEqual(device, _gpu((7, 5), "Tesla T4"))
        self.assertEqual(hardware.resolve_mixed_precision("auto", device).policy, "fp16")

    def test_describe_unknown_type(self):
        with self.assertRaisesRegex(ValueError, r"device_type must be one of .*got 'gpu'"):
            hardware.describe_device("gpu")


if __name__ == "__main__":
    tf.test.main()
