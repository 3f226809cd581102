"""The pretraining engine: one loop for every method, from CPU to multi-GPU.

Each method brings its pair rule, optimiser, per-epoch schedule and step (USCL's defaults:
Adam, constant then cosine; ``docs/methods.md`` §7). The engine brings the rest, split as
torchvision's classification reference splits its script: :func:`setup` (data, DDP, compile,
optimiser), :func:`train_one_epoch`, :func:`save_checkpoint` / :func:`load_checkpoint` (every
epoch ends with an atomic checkpoint; a rerun resumes from it and, on CPU, ends with the same
weights as an uninterrupted run) and :func:`metric_log` (dvclive, closed even on a crash).
Precision: bf16 autocast where the device runs it fast, channels_last, ``torch.compile`` and
DDP when started by ``torchrun`` (:mod:`pipeline.distributed`). Output: the backbone as a
torchvision ``state_dict`` plus the run card (:class:`pipeline.card.RunCard`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline import distributed, precision
from pipeline.atomic import atomic_path
from pipeline.backbones import torchvision_state_dict
from pipeline.card import Normalisation, RunCard
from pipeline.config import TrainConfig
from pipeline.data.manifest import Manifest
from pipeline.data.views import AugmentSpec
from pipeline.pretrain.augment import make_views
from pipeline.pretrain.loader import PairDataset
from pipeline.pretrain.losses import UNLABELLED
from pipeline.pretrain.methods import Method, build_method
from pipeline.pretrain.pairs import PairSpec

CHECKPOINT = "checkpoint.pt"
BACKBONE = "backbone.pt"
CARD = "card.json"


def label_indices(videos: pd.DataFrame, fraction: float, seed: int) -> tuple[list[int], list[str]]:
    """Class index per video, with only a seeded ``fraction`` of the labelled videos keeping
    their label (at least one when ``fraction`` > 0); the rest are UNLABELLED."""
    classes = sorted(videos["label"].dropna().unique())
    labels = [classes.index(label) if isinstance(label, str) else UNLABELLED
              for label in videos["label"]]
    labelled = [i for i, label in enumerate(labels) if label != UNLABELLED]
    keep = math.ceil(fraction * len(labelled)) if fraction > 0 else 0
    chosen = set(np.random.default_rng(seed).permutation(labelled)[:keep].tolist())
    return [label if i in chosen else UNLABELLED for i, label in enumerate(labels)], classes


def pretrain(manifest: Manifest, train_videos: pd.DataFrame, config: TrainConfig,
             out_dir: Path, progress: bool = True, held_out: list[str] | None = None,
             log_metrics: bool = True) -> tuple[RunCard, Method]:
    """Pretrain ``config.method`` on ``train_videos``; write the backbone and its card (rank 0)
    and return the card and the trained method. ``held_out``: the split's other video ids,
    which only a method with a meta set may use (Meta-USCL's ``held_out`` preset).
    ``log_metrics``: write the per-epoch dvclive logs (the stage does)."""
    out_dir, config = Path(out_dir), config.resolved()
    dist = distributed.init()
    device = dist.device()
    torch.manual_seed(config.seed)
    labels, classes = label_indices(train_videos, config.label_fraction, config.seed)
    method = build_method(config, len(classes)).to(device)
    if precision.channels_last(config.channels_last, config.amp, device):
        method = method.to(memory_format=torch.channels_last)
    data_key = data_fingerprint(manifest, train_videos)
    train_ids = train_videos["video_id"].tolist()
    meta = method.meta_set(train_ids, list(held_out or []))
    history: list[dict[str, float]] = []
    if method.trains:
        run_key = json.dumps({"params": asdict(config), "data": data_key,
                              "meta_set": meta[0] if meta else None}, sort_keys=True)
        training = setup(method, manifest, train_ids, labels, meta, config, dist, device)
        history = train(training, config, run_key, out_dir, dist, progress, log_metrics)
    augment = method.augment_spec()
    card = RunCard(
        method=config.method, preset=config.preset, backbone=config.backbone,
        classes=classes, train_videos=len(train_videos),
        labelled_videos=sum(label != UNLABELLED for label in labels),
        epochs=config.epochs if method.trains else 0, params=asdict(config), data=data_key,
        normalisation=Normalisation(augment.mean, augment.std),
        final_losses=history[-1] if history else {},
        meta_set=None if meta is None else {  # say plainly whether it saw training videos
            "videos": len(meta[0]), "pairs": meta[1].mode,
            "training_videos_in_it": len(set(meta[0]) & set(train_ids))})
    if dist.main:
        with atomic_path(out_dir / BACKBONE) as temporary:
            torch.save(torchvision_state_dict(method.backbone), temporary)
        card.save(out_dir / CARD)
    return card, method


def data_fingerprint(manifest: Manifest, videos: pd.DataFrame) -> str:
    """Digest of the training frames' JPEG hashes: same frames, same fingerprint."""
    rows = manifest.frames[manifest.frames["video_id"].isin(videos["video_id"])]
    return str(pd.util.hash_pandas_object(rows["sha256"], index=False).sum())


@dataclass
class Training:
    """Everything one epoch needs, built once by :func:`setup`."""

    method: Method
    step: Callable  # the method as the engine runs it: DDP-wrapped and/or compiled
    data: PairDataset
    loader: DataLoader
    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    augment: AugmentSpec
    device: torch.device
    autocast: AbstractContextManager
    channels_last: bool


def setup(method: Method, manifest: Manifest, video_ids: list[str], labels: list[int],
          meta: tuple[list[str], PairSpec] | None, config: TrainConfig,
          dist: distributed.Distributed, device: torch.device) -> Training:
    """The loader (with a meta stream for methods that have one), DDP, compile, optimiser."""
    pairs, mix_first = method.pair_spec()
    augment = method.augment_spec()
    views_in_workers = config.views_on == "workers" or (
        config.views_on == "auto" and device.type != "cuda")
    meta_data = None if meta is None else PairDataset(
        manifest, meta[0], None, meta[1], augment, mix_first=True,
        batch_size=config.meta.batch_size, seed=config.seed + 1, drop_last=False,
        views_in_workers=views_in_workers)
    data = PairDataset(manifest, video_ids, labels, pairs, augment, mix_first,
                       config.batch_size, config.seed,
                       frame_level=method.frame_level or config.negatives == "frames",
                       views_in_workers=views_in_workers, meta=meta_data)
    loader = DataLoader(data, batch_size=None, num_workers=config.workers,
                        persistent_workers=config.workers > 0)
    model: torch.nn.Module = method
    if dist.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            method, device_ids=[dist.local_rank] if device.type == "cuda" else None,
            find_unused_parameters=method.has_unused_parameters)
    optimiser, lr_factor = method.configure_optimiser()
    steps_per_epoch = max(1, len(data))
    scheduler = torch.optim.lr_scheduler.LambdaLR(  # updated after every step
        optimiser, lambda step: lr_factor(step / steps_per_epoch))
    return Training(method=method, step=compiled(model) if config.compile else model,
                    data=data, loader=loader, optimiser=optimiser, scheduler=scheduler,
                    augment=augment, device=device,
                    autocast=precision.autocast(config.amp, device),
                    channels_last=precision.channels_last(config.channels_last, config.amp,
                                                          device))


def train(training: Training, config: TrainConfig, run_key: str, out_dir: Path,
          dist: distributed.Distributed, progress: bool,
          log_metrics: bool) -> list[dict[str, float]]:
    """Every epoch not yet in this run's checkpoint; the per-epoch records."""
    start, history = load_checkpoint(out_dir / CHECKPOINT, run_key, training)
    with metric_log(out_dir, resume=start > 0, enabled=dist.main and log_metrics) as log:
        for epoch in range(start, config.epochs):
            record = train_one_epoch(training, epoch, config.epochs, progress and dist.main)
            history.append(record)
            if dist.main:
                save_checkpoint(out_dir / CHECKPOINT, run_key, training, epoch, history)
            log(record)
    distributed.broadcast_buffers(training.method)  # BN statistics: rank 0's, as exported
    return history


def train_one_epoch(training: Training, epoch: int, epochs: int,
                    progress: bool) -> dict[str, float]:
    """One pass over this rank's batches; the epoch's mean loss terms, lr and speed."""
    training.data.set_epoch(epoch)
    training.method.train()
    sums: dict[str, float] = {}
    lr = training.optimiser.param_groups[0]["lr"]  # the epoch's first step's
    images, started = 0, time.perf_counter()
    bar = tqdm(training.loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch",
               disable=not progress)
    for loaded in bar:
        batch = views_on_device(training.device, loaded, training.augment,
                                training.channels_last)
        terms = training.method.training_step(training.step, batch, training.optimiser,
                                              training.autocast)
        training.scheduler.step()
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        images += 2 * len(batch["label"])
        bar.set_postfix(loss=f"{float(terms['total'].detach()):.3f}")
    record = {name: total / max(1, len(training.data)) for name, total in sums.items()}
    record["lr"] = lr
    record["epoch_s"] = time.perf_counter() - started
    record["images_per_s"] = images / record["epoch_s"]
    return record


def compiled(model: torch.nn.Module, **options) -> Callable:
    """``torch.compile`` as the engine applies it: static shapes, because a dynamic graph's
    backward donates its buffers and Meta-USCL differentiates its forward pass twice."""
    return torch.compile(model, dynamic=False, **options)


def views_on_device(device: torch.device, loaded: dict[str, torch.Tensor],
                    augment: AugmentSpec, channels_last: bool) -> dict[str, torch.Tensor]:
    """Move a loader batch to ``device`` and make its views there (and its meta batch's),
    unless the workers made them."""
    loaded = {key: value.to(device, non_blocking=True) for key, value in loaded.items()}
    batch = {"label": loaded["label"]}
    for prefix in ("", "meta_"):
        part = {key[len(prefix):]: value for key, value in loaded.items()
                if key.startswith(prefix)}
        if "view1" in part:
            views = part["view1"], part["view2"]
        elif "frames" in part:
            views = make_views(part, augment)
        else:
            continue
        for index, view in enumerate(views, start=1):
            if channels_last:
                view = view.contiguous(memory_format=torch.channels_last)
            batch[f"{prefix}view{index}"] = view
    return batch


@contextmanager
def metric_log(out_dir: Path, resume: bool, enabled: bool
               ) -> Iterator[Callable[[dict[str, float]], None]]:
    """A function that logs one epoch's record with dvclive (a no-op when not ``enabled``);
    the log is closed when the block ends, by an exception too."""
    if not enabled:
        yield lambda record: None
        return
    from dvclive import Live  # the GPU image has no dvclive; only the stage logs

    with Live(str(out_dir / "dvclive"), resume=resume, dvcyaml=False,
              save_dvc_exp=False) as live:
        def log(record: dict[str, float]) -> None:
            for name, value in record.items():
                live.log_metric(f"train/{name}", value)
            live.next_step()
        yield log


def save_checkpoint(path: Path, run_key: str, training: Training, epoch: int,
                    history: list[dict[str, float]]) -> None:
    with atomic_path(path) as temporary:
        torch.save({"run": run_key, "model": training.method.state_dict(),
                    "optimiser": training.optimiser.state_dict(),
                    "scheduler": training.scheduler.state_dict(), "epoch": epoch,
                    "torch_rng": torch.get_rng_state(),
                    "history": json.dumps(history)}, temporary)


def checkpoint_history(path: Path) -> list[dict[str, float]]:
    """The per-epoch records a checkpoint holds (for benchmarks and reports)."""
    return json.loads(torch.load(path, map_location="cpu", weights_only=True)["history"])


def load_checkpoint(path: Path, run_key: str,
                    training: Training) -> tuple[int, list[dict[str, float]]]:
    """Load the last checkpoint of this very run (same params and data) if there is one;
    return (first epoch to run, history). A checkpoint of other params is ignored."""
    if not path.is_file():
        return 0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("run") != run_key:
        return 0, []
    training.method.load_state_dict(state["model"])
    training.optimiser.load_state_dict(state["optimiser"])
    training.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return state["epoch"] + 1, json.loads(state["history"])

