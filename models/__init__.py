"""On-device models: the committed ``.tflite`` files, their cards, and the code that makes them.

Layout (see ``docs/models.md``):

- ``models/posture/`` -- mat frame -> ``empty / supine / prone / left / right``;
- ``models/anomaly/`` -- sliding window of a scalar series -> anomaly score;
- ``models/evaluate.py`` -- held-out metrics of the committed files, through the
  same wrapper the device uses (:mod:`edge.inference.runtime`).

Each model folder holds ``<name>.tflite`` + ``card.json`` (the only files a
device needs; they ship as package data), ``MODEL_CARD.md``, ``data.py`` (the
generator: numpy only) and ``train.py`` (TensorFlow: the ``train`` extra,
never installed on a device, never imported by ``edge/``).  This package's
``__init__`` modules import nothing, so locating the data files is free.
"""
