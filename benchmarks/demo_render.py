r"""Speed of the demo data generator: render size, upscaling and PNG zlib level.

  python -m benchmarks.demo_render --num_images=40 --image_size=1024

Renders the same images (drawn like the data set) at several render sizes, scales them up to
--image_size, and encodes them at several zlib levels with the generator's PNG writer ("up": every
row Up-filtered, numpy + zlib) and with PIL's, all in one process side by side. Writes
runs/bench/demo_render.json (one object per case) and prints a table with the ratios.
"""

import io
import json
import os
import time

from absl import app, flags
from PIL import Image

from demo_data import label_model, png, render

_NUM_IMAGES = flags.DEFINE_integer("num_images", 40, "Images per case.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 1024, "Output size.")
_RENDER_SIZES = flags.DEFINE_list("render_sizes", ["256", "512", "1024"], "Render sizes to compare.")
_LEVELS = flags.DEFINE_list("levels", ["1", "3", "6"], "zlib levels to compare.")
_OUTPUT = flags.DEFINE_string("output", "runs/bench/demo_render.json", "JSON to write.")


def _pil_png(pixels, level):
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


ENCODERS = {
    "up": lambda pixels, level: png.encode_png(pixels, compress_level=level),
    "pil": _pil_png,
}


def main(argv):
    del argv
    rows = label_model.sample_images(_NUM_IMAGES.value, seed=0)
    size = _IMAGE_SIZE.value
    cases = []
    for render_size in (int(v) for v in _RENDER_SIZES.value):
        start = time.perf_counter()
        images = [
            render.render_image(row.findings, render.image_rng(0, i), size, render_size=render_size)
            for i, row in enumerate(rows)
        ]
        render_seconds = time.perf_counter() - start
        for encoder, level in [(e, int(v)) for e in ENCODERS for v in _LEVELS.value]:
            start = time.perf_counter()
            encoded = [ENCODERS[encoder](image, level) for image in images]
            encode_seconds = time.perf_counter() - start
            n = len(images)
            cases.append(
                {
                    "render_size": render_size,
                    "encoder": encoder,
                    "image_size": size,
                    "compress_level": level,
                    "images": n,
                    "render_ms": 1000 * render_seconds / n,
                    "encode_ms": 1000 * encode_seconds / n,
                    "total_ms": 1000 * (render_seconds + encode_seconds) / n,
                    "images_per_second": n / (render_seconds + encode_seconds),
                    "png_kb": sum(map(len, encoded)) / n / 1024,
                }
            )
    fastest = min(c["total_ms"] for c in cases)
    for case in cases:
        case["time_vs_fastest"] = case["total_ms"] / fastest
    os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
        json.dump(cases, f, indent=2)
    print(
        f"{'render':>6} {'level':>5} {'render ms':>9} {'encode ms':>9} {'total ms':>8} {'img/s':>6} {'PNG KB':>7} {'x fastest':>9}"
    )
    for c in cases:
        print(
            f"{c['render_size']:>6} {c['encoder']:>4} {c['compress_level']:>5} {c['render_ms']:>9.1f} {c['encode_ms']:>9.1f} "
            f"{c['total_ms']:>8.1f} {c['images_per_second']:>6.1f} {c['png_kb']:>7.0f} {c['time_vs_fastest']:>9.2f}"
        )
    print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
    app.run(main)
