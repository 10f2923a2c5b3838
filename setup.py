"""Chest X-ray classification at scale: Beam TFRecords, tf.data, ResUNet, reports.

All dependency versions are pinned here, and only here; the Makefile installs
`pip install -e .[dev]` into .venv/.
"""

import setuptools

# Pinned together on Python 3.11 (resolved and tested on 2026-11-25).
INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    # TensorFlow 2.21 does not pull it in; Keras' TensorBoard callback needs it.
    "tensorboard==2.21.0",
    "keras==3.15.1",
    "apache-beam==2.77.0",
    # WriteToTFRecord's CRC; plain apache-beam lacks it.
    "google-crc32c==1.9.0",
    "numpy==2.4.6",
    "pandas==3.1.1",
    "scikit-learn==1.9.1",
    "matplotlib==3.11.2",
    "absl-py==2.5.1",
    "pillow==12.3.0",
    # DICOM images (any data set's adapter; beam_pipelines/dicom.py).
    "pydicom==3.0.2",
]

EXTRAS_REQUIRE = {
    # portpicker: free ports for the tests that start servers (tf.data service, multi-worker).
    "dev": ["pytest==9.2.0", "ruff==0.17.6", "portpicker==1.6.0"],
    # Dataflow runner and gs:// paths: pip install -e '.[gcp]'.
    "gcp": ["apache-beam[gcp]==2.77.0"],
    # Only for `make bench-input`'s baseline (the 2023 thesis' Keras 2 ImageDataGenerator), in the
    # separate .venv-bench/: tf-keras must never enter the product's environment.
    "bench-baseline": ["tf-keras==2.21.0", "scipy==1.17.1"],
}

setuptools.setup(
    name="cxr-scale",
    version="0.1.0",
    description="NIH ChestX-ray14 to sharded TFRecords (Apache Beam), tf.data, ResUNet training and AUC reports.",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(
        include=[
            "beam_pipelines",
            "beam_pipelines.*",
            "cxr_cli",
            "cxr_cli.*",
            "demo_data",
            "demo_data.*",
            "tfrecords",
            "tfrecords.*",
            "trainer",
            "trainer.*",
        ]
    ),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={
        "console_scripts": [
            "cxr-demo-data=demo_data.generate:run",
            "cxr-build-tfrecords=beam_pipelines.build_tfrecords:run",
            "cxr-train=trainer.train:run",
            "cxr-evaluate=trainer.evaluate:run",
            "cxr-predict=trainer.predict:run",
        ],
    },
)
