"""Evaluation-only worlds: generators no training run, threshold or tuning step may use.

Each module here was written by someone who had not seen the training
generators (``models/posture/data.py``, ``models/posture/skeleton.py``,
``models/anomaly/data.py``) nor the models, so that a figure measured on them
says how a model does on data nobody here trained for.  ``tests/models``
checks that no training module imports this package.
"""
