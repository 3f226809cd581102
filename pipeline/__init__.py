"""uspipe: raw ultrasound clips to domain-pretrained backbones and honest downstream numbers.

The package is layered; imports run one way, top to bottom:

* :mod:`pipeline.data`: sources, decoding, shards, manifests, splits, frame access, views;
* :mod:`pipeline.pretrain`: the engine, pair loader, pretraining methods, losses, heads;
* :mod:`pipeline.evaluate`: fine-tuning, metrics, figures, reports (never pretraining
  internals: a backbone and its :mod:`pipeline.card` are the contract);
* underneath all three: config, card, backbones, atomic writes, distributed helpers,
  console, the torchvision shim; on top: the ``uspipe`` CLI and inspection.

Package ``__init__`` modules import nothing, so a stage's import closure (and with it its
DVC deps, :mod:`pipeline.deps`) holds only what the stage runs.
"""
