"""Tests for trainer.evaluation.localization.sanity."""

import numpy as np
import tensorflow as tf

from trainer.evaluation.localization import sanity


class BorderTest(tf.test.TestCase):
    def test_map_at_the_edge_has_all_its_mass_in_the_border(self):
        cam = np.zeros((20, 20))
        cam[-1, :] = 1.0
        self.assertAllClose(sanity.border_energy_share(cam), 1.0)

    def test_central_map_has_none(self):
        cam = np.zeros((20, 20))
        cam[8:12, 8:12] = 1.0
        self.assertEqual(sanity.border_energy_share(cam), 0.0)

    def test_flat_map_scores_the_border_area(self):
        share = sanity.border_energy_share(np.ones((50, 50)))
        self.assertAllClose(share, 1.0 - 0.8**2)
        self.assertAllClose(share, sanity.uniform_border_share((50, 50)))

    def test_empty_map_is_nan_and_bad_input_raises(self):
        self.assertTrue(np.isnan(sanity.border_energy_share(np.zeros((8, 8)))))
        with self.assertRaisesRegex(ValueError, "non-negative"):
            sanity.border_energy_share(-np.ones((8, 8)))
        with self.assertRaisesRegex(ValueError, "fraction"):
            sanity.border_mask((8, 8), fraction=0.6)

    def test_box_area_share(self):
        mask = np.zeros((10, 10), bool)
        mask[:5, :2] = True
        self.assertAllClose(sanity.box_area_share(mask), 0.1)


class RandomizationTest(tf.test.TestCase):
    def test_versus_baseline_needs_the_interval_above_it(self):
        self.assertEqual(sanity.versus_baseline(0.10, 0.073), "above")
        self.assertEqual(sanity.versus_baseline(0.073, 0.073), "not_above")
        self.assertEqual(sanity.versus_baseline(0.02, 0.073), "not_above")
        self.assertIsNone(sanity.versus_baseline(None, 0.073))
        self.assertIsNone(sanity.versus_baseline(float("nan"), 0.073))
        self.assertIsNone(sanity.versus_baseline(0.1, None))

    def test_same_maps_correlate_fully_and_shuffled_maps_do_not(self):
        rng = np.random.default_rng(0)
        maps = rng.random((6, 16, 16))
        shuffled = rng.permuted(maps.reshape(6, -1), axis=1).reshape(maps.shape)
        pixels = np.zeros((6, 4, 4, 1))
        labels = ["A", "B"]
        same = sanity.randomization_test(
            lambda p, k: maps, lambda p, k: maps, pixels, [0, 0, 0, 1, 1, 1], labels
        )
        self.assertAllClose(same["A"]["spearman"], 1.0)
        self.assertEqual(same["B"]["maps"], 3)
        other = sanity.randomization_test(
            lambda p, k: maps, lambda p, k: shuffled, pixels, [0, 0, 0, 1, 1, 1], labels
        )
        self.assertLess(abs(other["A"]["spearman"]), 0.3)

    def test_constant_map_is_left_out(self):
        self.assertTrue(np.isnan(sanity.rank_correlation(np.ones((4, 4)), np.arange(16.0))))
        with self.assertRaisesRegex(ValueError, "images but"):
            sanity.randomization_test(lambda p, k: p, lambda p, k: p, np.zeros((2, 4, 4, 1)), [0], ["A"])


if __name__ == "__main__":
    tf.test.main()
