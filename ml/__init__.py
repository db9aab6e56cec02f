"""Offline ML for the CIFAR classifier: data, models, training, evaluation, comparison, export.

Run ``python -m ml --help`` for the commands.
"""
