"""Tests for trainer/training/schedule.py."""

import tensorflow as tf
from absl.testing import parameterized

from trainer.training import schedule as lr_schedule


class BuildLrFnTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(
        # Ramp: 2e-6 + (1e-4 - 2e-6) * epoch / 8; 98e-6 / 8 = 12.25e-6.
        (0, 2e-6),
        (1, 1.425e-5),
        (4, 2e-6 + 4 * 12.25e-6),
        # End of ramp, then (1e-4 - 0) * 0.8 ** (epoch - 8).
        (8, 1e-4),
        (9, 8e-5),
        (10, 6.4e-5),
    )
    def test_default_values(self, epoch, expected):
        self.assertAllClose(lr_schedule.build_lr_fn()(epoch), expected, rtol=1e-9, atol=0)

    def test_sustain_and_lr_min(self):
        lr_fn = lr_schedule.build_lr_fn(
            lr_start=0.0, lr_max=1.0, lr_min=0.5, rampup_epochs=2, sustain_epochs=3, exp_decay=0.5
        )
        # Ramp 0, 0.5; sustain 1, 1, 1; decay (1 - 0.5) * 0.5 ** k + 0.5.
        self.assertAllClose([lr_fn(e) for e in range(7)], [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.75])

    def test_no_rampup_starts_at_lr_max(self):
        self.assertEqual(lr_schedule.build_lr_fn(rampup_epochs=0, lr_max=3e-4)(0), 3e-4)

    @parameterized.named_parameters(
        ("negative_lr", dict(lr_start=-1.0), "lr_start must be a finite number >= 0"),
        ("nan_lr", dict(lr_max=float("nan")), "lr_max must be a finite"),
        ("min_above_max", dict(lr_min=1.0, lr_max=0.1), "lr_min must be <= lr_max"),
        ("negative_rampup", dict(rampup_epochs=-1), "rampup_epochs must be an integer >= 0"),
        ("bad_decay", dict(exp_decay=0.0), r"exp_decay must be in \(0, 1\]"),
    )
    def test_bad_arguments(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            lr_schedule.build_lr_fn(**kwargs)

    def test_negative_epoch(self):
        with self.assertRaisesRegex(ValueError, "epoch must be >= 0"):
            lr_schedule.build_lr_fn()(-1)

    def test_returns_python_floats(self):
        # Keras' LearningRateScheduler refuses anything but floats; integer inputs must not leak.
        lr_fn = lr_schedule.build_lr_fn(lr_start=0, lr_max=1, lr_min=0, rampup_epochs=2, sustain_epochs=1)
        for epoch in range(6):
            self.assertIsInstance(lr_fn(epoch), float)


if __name__ == "__main__":
    tf.test.main()
