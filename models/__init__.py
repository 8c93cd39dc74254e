"""Shipped weights and model cards, installed as the package ``vs_vgan.weights``.

Resolved by :func:`vs_vgan.models.weights_path`; nothing here is imported as code.
"""
