"""Tests for trainer/training/config.py: every profile is complete and valid; the full profile is the 2023
thesis recipe; the binary's flags pick a profile and override single fields."""

import dataclasses
import os
import tempfile

import tensorflow as tf
from absl import flags
from absl.testing import parameterized

from trainer import train as train_binary
from trainer.model import augment
from trainer.model import run_dir as run_dir_lib
from trainer.training import config as config_lib

# Table 1 of the 2023 thesis: lr_start 2e-6, lr_max 1e-4, lr_min 0, 8 ramp-up epochs, no
# sustain, decay 0.8. Ramp: 2e-6 + (1e-4 - 2e-6) * epoch / 8 = 2e-6 + 12.25e-6 * epoch;
# then 1e-4 * 0.8 ** (epoch - 8).
_TABLE_1 = [
    2e-6,
    1.425e-5,
    2.65e-5,
    3.875e-5,
    5.1e-5,
    6.325e-5,
    7.55e-5,
    8.775e-5,
    1e-4,
    8e-5,
    6.4e-5,
    5.12e-5,
]
_FIELDS = [field.name for field in dataclasses.fields(config_lib.TrainConfig)]


def _parse(argv):
    """The binary's flag parsing: its flags on a fresh FlagValues, then its config."""
    flag_values = flags.FlagValues()
    holders = train_binary.define_flags(flag_values)
    flag_values(["trainer.train", *argv])
    return train_binary.config_from_flags(holders, base=config_lib.PROFILES[holders["profile"].value])


class ProfilesTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(*config_lib.PROFILE_NAMES)
    def test_every_profile_sets_every_field_and_validates(self, name):
        profile = config_lib.PROFILES[name]
        self.assertCountEqual(profile, _FIELDS)  # Nothing inherited, nothing unknown.
        config = config_lib.get_profile(name)
        self.assertEqual(config.profile, name)
        self.assertEqual(config.to_dict(), profile)
        self.assertIsNotNone(config.augment_config())

    def test_registry_matches_the_names(self):
        self.assertEqual(tuple(config_lib.PROFILES), config_lib.PROFILE_NAMES)

    def test_demo_is_the_dataclass_default_and_the_measured_demo_run(self):
        demo = config_lib.get_profile("demo")
        self.assertEqual(demo, config_lib.TrainConfig())
        # The values `make train` was measured with: ResUNet widths 8-16-32-64, batch 32 on one
        # replica, 12 epochs, the short ramp, positive-weighted loss, bf16.
        expected = dict(
            depth=3,
            base_filters=8,
            batch_size_per_replica=32,
            epochs=12,
            lr_start=1e-4,
            lr_max=1e-3,
            lr_min=0.0,
            rampup_epochs=2,
            sustain_epochs=3,
            exp_decay=0.85,
            scale_lr=True,
            class_imbalance="weights",
            mixed_precision="auto",
            augment_placement="auto",
            early_stopping_patience=5,
        )
        self.assertEqual({k: getattr(demo, k) for k in expected}, expected)

    def test_full_is_the_thesis_recipe(self):
        full = config_lib.get_profile("full")
        # ResUNet widths 32-64-128-256: three levels from base 32, bottleneck 32 * 2**3.
        self.assertEqual((full.model, full.depth, full.base_filters), ("resunet", 3, 32))
        self.assertEqual(
            [full.base_filters * 2**level for level in range(full.depth + 1)], [32, 64, 128, 256]
        )
        self.assertEqual((full.batch_size_per_replica, full.epochs), (16, 30))
        self.assertEqual(full.class_imbalance, "none")  # Plain binary cross-entropy.
        self.assertEqual(full.mixed_precision, "auto")  # Per device: trainer/training/device.py.
        self.assertFalse(full.scale_lr)
        self.assertEqual(full.early_stopping_patience, 0)
        # The thesis' ImageDataGenerator, which is also AugmentConfig's default.
        thesis = augment.AugmentConfig(
            rotation_degrees=3.0,
            width_shift=0.1,
            height_shift=0.05,
            zoom=0.15,
            horizontal_flip=True,
            vertical_flip=False,
            fill_mode="reflect",
        )
        self.assertEqual(full.augment_config(), thesis)
        self.assertEqual(augment.AugmentConfig(), thesis)

    def test_full_learning_rate_per_epoch_is_table_1(self):
        lr_fn = config_lib.get_profile("full").lr_fn(replicas=1)
        self.assertAllClose([lr_fn(epoch) for epoch in range(len(_TABLE_1))], _TABLE_1, rtol=1e-9, atol=0)
        # scale_lr is off: more replicas do not change the thesis' rates.
        self.assertEqual(config_lib.get_profile("full").lr_fn(replicas=4)(8), 1e-4)

    def test_profiles_do_not_share_values_they_set_differently(self):
        demo, full = config_lib.get_profile("demo"), config_lib.get_profile("full")
        differing = {k for k in _FIELDS if getattr(demo, k) != getattr(full, k)}
        self.assertContainsSubset(
            {"lr_start", "lr_max", "rampup_epochs", "sustain_epochs", "exp_decay", "class_imbalance"},
            differing,
        )

    def test_get_profile_errors(self):
        with self.assertRaisesRegex(ValueError, r"profile must be one of \('demo', 'full'\), got 'huge'"):
            config_lib.get_profile("huge")
        with self.assertRaisesRegex(ValueError, r"TrainConfig has no field\(s\) \['batch_size'\]"):
            config_lib.get_profile("demo", batch_size=8)


class ValidationTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("unknown_profile", dict(profile="tiny"), r"TrainConfig.profile must be one of"),
        ("bad_verbose", dict(verbose=3), "TrainConfig.verbose must be 0, 1 or 2, got 3"),
        ("zero_shuffle", dict(shuffle_buffer=0), "TrainConfig.shuffle_buffer must be an integer >= 1"),
        (
            "bad_rotation",
            dict(augment_rotation_degrees=200.0),
            r"augment_rotation_degrees must be in \[0, 180\]",
        ),
        ("bad_fill", dict(augment_fill_mode="wrap"), "augment_fill_mode must be one of"),
        ("bad_zoom", dict(augment_zoom=1.0), r"augment_zoom must be in \[0, 1\)"),
    )
    def test_invalid_fields(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            config_lib.TrainConfig(**kwargs)

    def test_augment_off_gives_no_augment_config(self):
        self.assertIsNone(config_lib.TrainConfig(augment=False).augment_config())


class CommandLineTest(tf.test.TestCase):
    def test_profile_flag_gives_the_whole_profile(self):
        self.assertEqual(_parse(["--profile=full"]), config_lib.get_profile("full"))
        self.assertEqual(_parse([]), config_lib.get_profile("demo"))

    def test_explicit_flag_overrides_one_field_of_the_profile(self):
        config = _parse(
            ["--profile=full", "--epochs=2", "--records_dir=data/x", "--noaugment_horizontal_flip"]
        )
        self.assertEqual(
            config,
            config_lib.get_profile("full", epochs=2, records_dir="data/x", augment_horizontal_flip=False),
        )
        # Everything else is the full profile's, not the flags' (demo) defaults.
        lr_fn = config.lr_fn()
        self.assertAllClose([lr_fn(epoch) for epoch in range(len(_TABLE_1))], _TABLE_1, rtol=1e-9, atol=0)
        self.assertEqual(config.base_filters, 32)

    def test_every_field_is_a_flag(self):
        flag_values = flags.FlagValues()
        holders = train_binary.define_flags(flag_values)
        self.assertCountEqual(holders, [*_FIELDS, "strategy", "dump_flagfile"])
        # Keras' per-epoch output is --epoch_lines; --verbose would read like absl's --verbosity.
        self.assertIn("epoch_lines", flag_values)
        self.assertNotIn("verbose", flag_values)

    def test_a_runs_config_json_becomes_a_flagfile_that_re_creates_it(self):
        run_dir = tempfile.mkdtemp(dir=self.get_temp_dir())
        recorded = config_lib.get_profile(
            "full",
            records_dir="data/x",
            run_dir=run_dir,
            epochs=2,
            lr_max=3.5e-5,
            augment_horizontal_flip=False,
            validation_batch_size_per_replica=8,
            verbose=0,
        )
        run_dir_lib.write_config(run_dir, {"profile": "full", "train_config": recorded.to_dict()})
        path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), "run.flags")

        flag_values = flags.FlagValues()
        holders = train_binary.define_flags(flag_values)
        flag_values(["trainer.train", f"--run_dir={run_dir}", f"--dump_flagfile={path}"])
        train_binary.main(["trainer.train"], holders=holders)  # Writes the file, trains nothing.
        with open(path) as f:
            text = f.read()
        self.assertIn("--epoch_lines=0\n", text)
        self.assertIn("--noaugment_horizontal_flip\n", text)
        self.assertEqual(_parse([f"--flagfile={path}"]), recorded)
        # A flag after the file overrides it, as on any command line.
        self.assertEqual(
            _parse([f"--flagfile={path}", "--epochs=3"]), dataclasses.replace(recorded, epochs=3)
        )

    def test_without_a_run_the_flagfile_holds_the_command_lines_config(self):
        path = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), "run.flags")
        run_dir = os.path.join(tempfile.mkdtemp(dir=self.get_temp_dir()), "new-run")
        argv = [f"--run_dir={run_dir}", "--profile=full", "--epochs=4", "--nocache"]
        flag_values = flags.FlagValues()
        holders = train_binary.define_flags(flag_values)
        flag_values(["trainer.train", *argv, f"--dump_flagfile={path}"])
        train_binary.main(["trainer.train"], holders=holders)  # Writes the file, trains nothing.
        self.assertEqual(_parse([f"--flagfile={path}"]), _parse(argv))
        self.assertFalse(os.path.exists(run_dir))

    def test_augment_flags_come_from_augment_config(self):
        # One flag per AugmentConfig field, with its default, a help text and its allowed values.
        flag_values = flags.FlagValues()
        train_binary.define_flags(flag_values)
        for field in dataclasses.fields(augment.AugmentConfig):
            flag = flag_values[f"augment_{field.name}"]
            self.assertEqual(flag.default, field.default)
            self.assertTrue(flag.help)
        self.assertCountEqual(flag_values["augment_fill_mode"].parser.enum_values, augment.FILL_MODES)
        config = _parse(["--augment_rotation_degrees=7.5", "--augment_interpolation=nearest"])
        self.assertEqual(
            config.augment_config(),
            augment.AugmentConfig(rotation_degrees=7.5, interpolation="nearest"),
        )

    def test_bad_flag_value_names_the_field(self):
        with self.assertRaisesRegex(ValueError, "TrainConfig.lr_min must be <= lr_max"):
            _parse(["--profile=full", "--lr_min=1.0"])


if __name__ == "__main__":
    tf.test.main()
