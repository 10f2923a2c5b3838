"""Tests for cxr_cli.config_flags: flags derived from a config dataclass."""

from __future__ import annotations

import dataclasses

from absl import flags
from absl.testing import absltest

from cxr_cli import config_flags


@dataclasses.dataclass(frozen=True)
class _Config:
    path: str = "data"
    size: int = 64
    rate: float = 0.5
    enabled: bool = True
    mode: str = dataclasses.field(default="a", metadata={"help": "The mode.", "choices": ("a", "b")})
    limit: int | None = None
    names: tuple[str, ...] = ("x", "y")
    internal: int = dataclasses.field(default=3, metadata={"flag": False})

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"_Config.size must be >= 1, got {self.size!r}.")


class ConfigFlagsTest(absltest.TestCase):
    def _define(self, **kwargs):
        flag_values = flags.FlagValues()
        return flag_values, config_flags.define_from_dataclass(_Config, flag_values=flag_values, **kwargs)

    def test_one_flag_per_field_with_the_dataclass_defaults(self):
        flag_values, holders = self._define()
        flag_values(["prog"])
        self.assertNotIn("internal", holders)
        self.assertEqual(config_flags.build_config(_Config, holders), _Config())
        self.assertIn("The mode.", flag_values["mode"].help)

    def test_parsed_values_reach_the_config(self):
        flag_values, holders = self._define()
        flag_values(
            ["prog", "--size=32", "--rate=0.25", "--noenabled", "--mode=b", "--limit=7", "--names=p,q,r"]
        )
        config = config_flags.build_config(_Config, holders)
        self.assertEqual(
            config, _Config(size=32, rate=0.25, enabled=False, mode="b", limit=7, names=("p", "q", "r"))
        )

    def test_flags_belong_to_the_defining_module(self):
        # A binary's --help lists the key flags of its own module; the flags must not be
        # attributed to config_flags.
        flag_values, _ = self._define()
        names = {flag.name for flag in flag_values.get_key_flags_for_module(__name__)}
        self.assertContainsSubset({"path", "size", "mode", "names"}, names)

    def test_enum_rejects_a_value_outside_the_choices(self):
        flag_values, _ = self._define()
        with self.assertRaisesRegex(flags.IllegalFlagValueError, "mode"):
            flag_values(["prog", "--mode=c"])

    def test_base_is_used_and_only_explicit_flags_override_it(self):
        base = _Config(path="elsewhere", size=256, rate=0.1)
        flag_values, holders = self._define()
        flag_values(["prog", "--size=128"])
        config = config_flags.build_config(_Config, holders, base=base)
        # size given explicitly wins; path and rate come from the base, not the flag defaults.
        self.assertEqual(config, _Config(path="elsewhere", size=128, rate=0.1))

    def test_base_values_are_the_shown_defaults(self):
        flag_values, _ = self._define(base={"size": 256})
        flag_values(["prog"])
        self.assertEqual(flag_values["size"].default, 256)

    def test_overrides_win_and_validation_runs(self):
        flag_values, holders = self._define()
        flag_values(["prog", "--size=0"])
        with self.assertRaisesRegex(ValueError, "size must be >= 1, got 0"):
            config_flags.build_config(_Config, holders)
        self.assertEqual(config_flags.build_config(_Config, holders, overrides={"size": 5}).size, 5)

    def test_unsupported_field_type_is_named(self):
        @dataclasses.dataclass(frozen=True)
        class Bad:
            table: dict = dataclasses.field(default_factory=dict)

        with self.assertRaisesRegex(TypeError, "Bad.table"):
            config_flags.define_from_dataclass(Bad, flag_values=flags.FlagValues())


if __name__ == "__main__":
    absltest.main()
