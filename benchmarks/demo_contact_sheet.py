r"""Contact sheet of demo images with their labels, to look at the planted patterns.

  python -m benchmarks.demo_contact_sheet --output=/tmp/demo_sheet.png --size=256

Default: one normal image and one image per finding (each finding alone), then a few drawn like the
data set (--random).
"""

from absl import app, flags
from PIL import Image, ImageDraw

from demo_data import label_model
from demo_data import render as render_lib
from tfrecords import schema

_OUTPUT = flags.DEFINE_string("output", "/tmp/demo_sheet.png", "PNG to write.")
_SIZE = flags.DEFINE_integer("size", 256, "Tile size (images are rendered at this size).")
_COLUMNS = flags.DEFINE_integer("columns", 5, "Tiles per row.")
_RANDOM = flags.DEFINE_integer("random", 0, "Images drawn like the data set, after the per-finding ones.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed.")
_RENDER_SIZE = flags.DEFINE_integer("render_size", 0, "Render at this size then downsize (0: --size).")


def main(argv):
    del argv
    cases = [()] + [(name,) for name in schema.FINDINGS]
    rows = label_model.sample_images(max(_RANDOM.value, 1), seed=_SEED.value)[: _RANDOM.value]
    cases += [row.findings for row in rows]
    size = _SIZE.value
    render = _RENDER_SIZE.value or size
    columns = _COLUMNS.value
    sheet = Image.new("L", (columns * size, -(-len(cases) // columns) * size), 0)
    draw = ImageDraw.Draw(sheet)
    for i, findings in enumerate(cases):
        pixels = render_lib.render_image(findings, render_lib.image_rng(_SEED.value + 1000, i), render)
        tile = Image.fromarray(pixels)
        if render != size:
            tile = tile.resize((size, size), Image.Resampling.BOX)
        x, y = (i % columns) * size, (i // columns) * size
        sheet.paste(tile, (x, y))
        text = "|".join(findings) or schema.NO_FINDING
        draw.rectangle([x, y, x + 7 * len(text) + 4, y + 12], fill=0)
        draw.text((x + 2, y + 1), text, fill=255)
    sheet.save(_OUTPUT.value)
    print(f"wrote {_OUTPUT.value}: {len(cases)} tiles")


if __name__ == "__main__":
    app.run(main)
