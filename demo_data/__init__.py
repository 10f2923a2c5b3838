"""A synthetic chest X-ray data set laid out exactly like NIH ChestX-ray14 (the demo set).

On a machine without the NIH download every command of the project still runs end to end on this
set; it is laid out like the real release, so the same Beam job reads both. Where things are:

  generate      the binary: `python -m demo_data.generate --output_dir=data/demo`
  writer        `DemoDataConfig`, `write`: renders in worker processes and writes the files
  layout        NIH's file names and formats (label file, split lists, box file)
  label_model   patients, follow-ups, findings with NIH's prevalences and co-occurrence, splits,
                which test images get boxes
  render        one image: pose, anatomy, chest, findings, exposure, size
  anatomy       the normal chest: anatomy sampling and the background layers
  findings      one painting function per finding, in a registry
  canvas        the image being drawn, its coordinates, boxes
  shapes        soft-edged shapes and smooth noise
  png           the PNG writer

TensorFlow-free (numpy and PIL only), so that rendering processes start fast and never carry a
TensorFlow runtime.
"""
