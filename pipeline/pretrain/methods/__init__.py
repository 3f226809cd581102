"""Pretraining methods, registered by name (``train.method`` in params.yaml).

Each method is one small module that subclasses :class:`~pipeline.pretrain.methods.base.Method` and
registers itself; adding one touches no other method. Importing this package imports them all.
"""

from pipeline.pretrain.methods import hico, meta_uscl, scratch, simclr, supervised, uscl  # noqa: F401
from pipeline.pretrain.methods.base import METHODS, Method, build_method, load_trained, register

__all__ = ["METHODS", "Method", "build_method", "load_trained", "register"]
