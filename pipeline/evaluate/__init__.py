"""Evaluation: fine-tuning and frozen-feature protocols, metrics, figures and reports
(``docs/methods.md`` §8-9). Depends on data and on exported backbones, never on pretraining
internals."""
