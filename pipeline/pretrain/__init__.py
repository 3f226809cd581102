"""Pretraining: the engine, the pair loader, the methods registered by name, their losses and
heads (``docs/methods.md`` §2-7)."""
