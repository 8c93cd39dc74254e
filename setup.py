"""vs_vgan's setup.py: a shim for tools that still run it. The packaging metadata (name,
version, dependencies, extras, the vs-vgan command, the packages and the weights and demo
clip they carry) is declared in pyproject.toml (PEP 621)."""
from setuptools import setup

setup()
