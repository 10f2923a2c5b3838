"""Tests for trainer.model.gradcam's batched maps, layer check and box drawing."""

import keras
import numpy as np
import tensorflow as tf

from tests import fake_data
from trainer.model import gradcam


class BatchMapsTest(tf.test.TestCase):
    def test_batch_equals_one_image_at_a_time(self):
        model = fake_data.tiny_keras_model(16)
        explainer = gradcam.GradCam(model)
        pixels = np.random.default_rng(0).integers(0, 256, size=(3, 16, 16, 1)).astype(np.float32)
        classes = [0, 4, 13]
        batch = explainer.batch_maps(pixels, classes, output_size=(20, 24))
        self.assertEqual(batch.shape, (3, 20, 24))
        for i, k in enumerate(classes):
            self.assertAllClose(batch[i], explainer.maps(pixels[i], [k], output_size=(20, 24))[0], atol=1e-6)

    def test_bright_spot_model_maps_the_image(self):
        # fake_data.bright_spot_model: Grad-CAM = image / max(image), whatever the finding.
        explainer = gradcam.GradCam(fake_data.bright_spot_model(8))
        pixels = np.zeros((2, 8, 8, 1), np.float32)
        pixels[0, 2:4, 5:7] = 200
        pixels[0, 6, 0] = 100
        pixels[1, 0, 0] = 50
        maps = explainer.batch_maps(pixels, [3, 9], output_size=(8, 8))
        self.assertAllClose(maps[0], pixels[0, ..., 0] / 200, atol=1e-6)
        self.assertAllClose(maps[1], pixels[1, ..., 0] / 50, atol=1e-6)

    def test_empty_batch_and_wrong_shape(self):
        explainer = gradcam.GradCam(fake_data.tiny_keras_model(8))
        self.assertEqual(
            explainer.batch_maps(np.zeros((0, 8, 8, 1)), [], output_size=(4, 4)).shape, (0, 4, 4)
        )
        with self.assertRaisesRegex(
            ValueError, r"pixels must be \[2, 8, 8, 1\] for 2 class indices, got \(1, 8, 8, 1\)"
        ):
            explainer.batch_maps(np.zeros((1, 8, 8, 1)), [0, 1], output_size=(8, 8))

    def test_missing_layers(self):
        self.assertEqual(gradcam.missing_layers(fake_data.tiny_keras_model(8)), [])
        inputs = keras.Input((8, 8, 1))
        outputs = keras.layers.Dense(15, name="dense")(keras.layers.Flatten()(inputs))
        self.assertEqual(
            gradcam.missing_layers(keras.Model(inputs, outputs)), ["decoder_output", "probabilities"]
        )


def _two_layer_model(size=16):
    """Pixels -> conv "decoder_output" [size, size, 4] and, pooled 4x, conv "bottleneck_out"
    [size/4, size/4, 6]; both globally averaged ("bottleneck_pool" like the ResUNet's), then Dense(15)."""
    inputs = keras.Input((size, size, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    init = keras.initializers.RandomNormal(seed=1)
    decoder = keras.layers.Conv2D(
        4, 3, padding="same", activation="relu", kernel_initializer=init, name="decoder_output"
    )(x)
    down = keras.layers.AveragePooling2D(4)(x)
    bottleneck = keras.layers.Conv2D(6, 1, activation="relu", bias_initializer="ones", name="bottleneck_out")(
        down
    )
    pooled = keras.layers.Concatenate()([
        keras.layers.GlobalAveragePooling2D(name="decoder_pool")(decoder),
        keras.layers.GlobalAveragePooling2D(name="bottleneck_pool")(bottleneck),
    ])  # fmt: skip
    head = keras.layers.Dense(
        15, activation="sigmoid", kernel_initializer=init, bias_initializer="ones", name="probabilities"
    )
    return keras.Model(inputs, head(pooled))


class TwoLayerTest(tf.test.TestCase):
    def test_layers_follow_the_pooled_head(self):
        self.assertEqual(gradcam.feature_layers(_two_layer_model()), ("decoder_output", "bottleneck_out"))
        self.assertEqual(gradcam.feature_layers(fake_data.tiny_keras_model(8)), ("decoder_output",))

    def test_map_is_the_class_activation_map_of_the_whole_head(self):
        # Head: logit_c = b_c + sum_k W[k, c] mean(A_dec_k) + sum_j W[4 + j, c] mean(A_bot_j). The map
        # is sum_k W[k, c] A_dec_k (16x16) + upsampled sum_j W[4 + j, c] A_bot_j (4x4 -> 16x16), whose
        # mean over the image is logit_c - b_c: each layer counts by its share of the logit.
        model = _two_layer_model()
        pixels = np.random.default_rng(2).integers(0, 256, size=(1, 16, 16, 1)).astype(np.float32)
        decoder, bottleneck = keras.Model(
            model.inputs, [model.get_layer(n).output for n in ("decoder_output", "bottleneck_out")]
        )(pixels)
        kernel = model.get_layer("probabilities").kernel.numpy()
        bias = model.get_layer("probabilities").bias.numpy()
        probabilities = model([pixels]).numpy()
        logits = np.log(probabilities / (1 - probabilities))
        for c in (0, 7):
            dec_map = decoder.numpy()[0] @ kernel[:4, c]
            bot_map = tf.image.resize(
                bottleneck.numpy()[..., :] @ kernel[4:, c][:, None], (16, 16), method="bilinear"
            )
            full = dec_map + bot_map.numpy()[0, ..., 0]
            self.assertAllClose(full.mean(), logits[0, c] - bias[c], atol=1e-4)
            expected = np.maximum(full, 0) / np.maximum(full, 0).max()
            actual = gradcam.GradCam(model, smooth=False).maps(pixels[0], [c], output_size=(16, 16))[0]
            self.assertAllClose(actual, expected, atol=1e-5)
            # Smoothed (the default): the decoder's map is first averaged onto the bottleneck's 4x4
            # grid, so both layers reach the image through the same bilinear upsampling.
            dec_coarse = dec_map.reshape(4, 4, 4, 4).mean(axis=(1, 3))
            coarse = bottleneck.numpy()[0] @ kernel[4:, c] + dec_coarse
            smooth = tf.image.resize(coarse[None, ..., None], (16, 16), method="bilinear").numpy()[0, ..., 0]
            self.assertAllClose(smooth.mean(), full.mean(), atol=1e-4)
            actual = gradcam.GradCam(model).maps(pixels[0], [c], output_size=(16, 16))[0]
            self.assertAllClose(actual, np.maximum(smooth, 0) / np.maximum(smooth, 0).max(), atol=1e-5)
            # The decoder alone is plain Grad-CAM on that layer.
            alone = gradcam.GradCam(model, layer_names=["decoder_output"]).maps(
                pixels[0], [c], output_size=(16, 16)
            )[0]
            self.assertAllClose(alone, np.maximum(dec_map, 0) / np.maximum(dec_map, 0).max(), atol=1e-5)


class MethodsTest(tf.test.TestCase):
    def test_methods_agree_where_the_gradient_is_flat(self):
        # The bright-spot model's gradient is the same at every position: HiResCAM is Grad-CAM,
        # and Grad-CAM++'s per-position weights are constant too, so all three map the image.
        pixels = np.zeros((1, 8, 8, 1), np.float32)
        pixels[0, 1:3, 4:6] = 120
        pixels[0, 6, 6] = 60
        for method in gradcam.METHODS:
            cam = gradcam.GradCam(fake_data.bright_spot_model(8), method=method).maps(
                pixels[0], [2], output_size=(8, 8)
            )[0]
            self.assertAllClose(cam, pixels[0, ..., 0] / 120, atol=1e-6, msg=method)

    def test_hirescam_weighs_each_position_by_its_own_gradient(self):
        # logit = sum(A * W) with a position-dependent W: HiResCAM is ReLU(A * W), Grad-CAM the
        # feature map times the sum of W, whatever the position.
        inputs = keras.Input((4, 4, 1))
        features = keras.layers.Rescaling(1.0, name="decoder_output")(inputs)
        weights = np.zeros((4, 4, 1), np.float32)
        weights[0, 0] = 1.0
        weights[3, 3] = -1.0
        weighted = keras.layers.Lambda(lambda a: a * weights)(features)
        logits = keras.layers.Dense(15, kernel_initializer="ones", name="probabilities")(
            keras.layers.Flatten()(weighted)
        )
        model = keras.Model(inputs, logits)
        pixels = np.full((4, 4, 1), 10.0, np.float32)
        hires = gradcam.GradCam(model, method="hirescam").maps(pixels, [0], output_size=(4, 4))[0]
        expected = np.zeros((4, 4))
        expected[0, 0] = 1.0
        self.assertAllClose(hires, expected)
        # Grad-CAM: the gradients sum to 0 over the image, so no positive evidence anywhere.
        self.assertAllEqual(gradcam.GradCam(model).maps(pixels, [0], output_size=(4, 4))[0], np.zeros((4, 4)))

    def test_unknown_method(self):
        with self.assertRaisesRegex(ValueError, r"method must be one of .*'gradcam\+\+'.*got 'cam'"):
            gradcam.GradCam(fake_data.tiny_keras_model(8), method="cam")

    def test_randomized_keeps_the_architecture_and_redraws_the_weights(self):
        model = fake_data.tiny_keras_model(8)
        # "Training": weights moved away from what the initializers draw.
        model.set_weights([w + 0.5 for w in model.get_weights()])
        explainer = gradcam.GradCam(model, method="hirescam", smooth=False)
        random = explainer.randomized(seed=3)
        self.assertEqual(
            (random.layer_names, random.method, random.smooth), (explainer.layer_names, "hirescam", False)
        )
        trained = explainer.model.get_layer("decoder_output").get_weights()[0]
        redrawn = random.model.get_layer("decoder_output").get_weights()[0]
        self.assertEqual(trained.shape, redrawn.shape)
        self.assertFalse(np.allclose(trained, redrawn))
        again = explainer.randomized(seed=3).model.get_layer("decoder_output").get_weights()[0]
        self.assertAllClose(redrawn, again)


class DrawBoxesTest(tf.test.TestCase):
    def test_outline_covers_the_box_edges_only(self):
        # Box x=2, y=1, w=3, h=4: columns 2..4, rows 1..4; the outline is its border pixels.
        rgb = gradcam.draw_boxes(np.zeros((8, 8, 3), np.uint8), [(2, 1, 3, 4)], color=(255, 0, 0))
        drawn = rgb[..., 0] == 255
        expected = np.zeros((8, 8), bool)
        expected[1:5, 2:5] = True
        expected[2:4, 3:4] = False  # The inside stays untouched.
        self.assertAllEqual(drawn, expected)
        self.assertAllEqual(rgb[..., 1], np.zeros((8, 8)))


if __name__ == "__main__":
    tf.test.main()
