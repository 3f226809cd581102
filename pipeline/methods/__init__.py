"""Pretraining methods, registered by name (``train.method`` in params.yaml).

Each method is one small module that subclasses :class:`~pipeline.methods.base.Method` and
registers itself; adding one touches no other method. Importing this package imports them all.
"""

from pipeline.methods import hico, meta_uscl, scratch, simclr, supervised, uscl  # noqa: F401
from pipeline.methods.base import METHODS, Method, MethodConfig, build_method, register

__all__ = ["METHODS", "Method", "MethodConfig", "build_method", "register"]
