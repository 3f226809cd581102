"""The pretraining engine: one loop for every method, from CPU to multi-GPU.

Each method brings its pair rule, optimiser, per-epoch schedule and step (USCL's defaults:
Adam, constant then cosine; method-spec §7). The engine brings the data (views made on the
device, plus a meta batch for methods with a meta set), bf16 autocast on GPU (fp32 on CPU),
optional channels_last and ``torch.compile``, and DDP when started by ``torchrun`` (gloo on
CPU, NCCL on GPU). Every epoch ends with an atomic checkpoint; a rerun resumes from it and, on
CPU, ends with the same weights as an uninterrupted run. Output: the backbone as a torchvision
``state_dict`` plus a JSON card; dvclive logs per epoch.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.atomic import atomic_path, write_json
from pipeline.augment import AugmentSpec, make_views
from pipeline.config import TrainConfig
from pipeline.loader import PairDataset
from pipeline.losses import UNLABELLED
from pipeline.manifest import Manifest
from pipeline.methods import Method, MethodConfig, build_method
from pipeline.models import torchvision_state_dict
from pipeline.pairs import PairSpec

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


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join the process group ``torchrun`` describes (WORLD_SIZE > 1); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return Distributed(torch.distributed.get_rank(), world, int(os.environ.get("LOCAL_RANK", 0)))


def configured_method(config: TrainConfig, classes: int) -> Method:
    """``config.method`` built with the knobs of ``config`` (also used to reload one)."""
    return build_method(config.method, MethodConfig(
        backbone=config.backbone, imagenet=config.imagenet, preset=config.preset,
        num_classes=max(1, classes), temperature=config.temperature,
        supervised_weight=config.supervised_weight, meta=config.meta))


def pretrain(manifest: Manifest, train_videos: pd.DataFrame, config: TrainConfig,
             out_dir: Path, progress: bool = True, held_out: list[str] | None = None,
             log_metrics: bool = True) -> tuple[dict[str, object], Method]:
    """Pretrain ``config.method`` on ``train_videos``; write the backbone and its card (rank 0)
    and return the card and the trained method. ``held_out``: the split's other video ids,
    which only a method with a meta set may use (Meta-USCL's ``held_out`` preset).
    ``log_metrics``: write the per-epoch dvclive logs (the stage does)."""
    out_dir = Path(out_dir)
    dist = init_distributed()
    device = torch.device(f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(config.seed)
    labels, classes = label_indices(train_videos, config.label_fraction, config.seed)
    method = configured_method(config, len(classes)).to(device)
    if config.channels_last:
        method = method.to(memory_format=torch.channels_last)
    data_key = _data_fingerprint(manifest, train_videos)
    train_ids = train_videos["video_id"].tolist()
    meta = method.meta_set(train_ids, list(held_out or []), config)
    history: list[dict[str, float]] = []
    if method.trains:
        history = _train(method, manifest, train_videos, labels, meta, config, data_key,
                         out_dir, dist, device, progress, log_metrics)
    card = {"method": config.method, "preset": config.preset, "backbone": config.backbone,
            "classes": classes, "train_videos": len(train_videos),
            "labelled_videos": sum(label != UNLABELLED for label in labels),
            "epochs": config.epochs if method.trains else 0, "params": asdict(config),
            "data": data_key, "normalise": _normalisation(method.augment_spec(config)),
            "final_losses": history[-1] if history else {}}
    if meta is not None:  # say plainly whether the meta set saw training videos
        card["meta_set"] = {"videos": len(meta[0]), "pairs": meta[1].mode,
                            "training_videos_in_it": len(set(meta[0]) & set(train_ids))}
    if dist.main:
        with atomic_path(out_dir / BACKBONE) as temporary:
            torch.save(torchvision_state_dict(method.backbone), temporary)
        write_json(out_dir / CARD, card)
    return card, method


def _normalisation(augment: AugmentSpec) -> dict[str, list[float]]:
    """The input normalisation the backbone was trained with (fine-tuning must reuse it)."""
    return {"mean": list(augment.mean), "std": list(augment.std)}


def _data_fingerprint(manifest: Manifest, videos: pd.DataFrame) -> str:
    """Digest of the training frames' JPEG hashes: same frames, same fingerprint."""
    rows = manifest.frames[manifest.frames["video_id"].isin(videos["video_id"])]
    return str(pd.util.hash_pandas_object(rows["sha256"], index=False).sum())


def _train(method: Method, manifest: Manifest, videos: pd.DataFrame, labels: list[int],
           meta: tuple[list[str], PairSpec] | None, config: TrainConfig, data_key: str,
           out_dir: Path, dist: Distributed, device: torch.device,
           progress: bool, log_metrics: bool) -> list[dict[str, float]]:
    pairs, mix_first = method.pair_spec(config)
    augment = method.augment_spec(config)
    views_in_workers = config.views_on == "workers" or (
        config.views_on == "auto" and device.type != "cuda")
    meta_data = None if meta is None else PairDataset(
        manifest, meta[0], None, meta[1], augment, mix_first=True,
        batch_size=config.meta.batch_size, seed=config.seed + 1, drop_last=False,
        views_in_workers=views_in_workers)
    data = PairDataset(manifest, videos["video_id"].tolist(), labels, pairs, augment, mix_first,
                       config.batch_size, config.seed,
                       frame_level=method.frame_level or config.negatives == "frames",
                       views_in_workers=views_in_workers, meta=meta_data)
    loader = DataLoader(data, batch_size=None, num_workers=config.workers,
                        persistent_workers=config.workers > 0)
    model = method
    if dist.world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            method, device_ids=[dist.local_rank] if device.type == "cuda" else None,
            find_unused_parameters=method.has_unused_parameters)
    step = compiled(model) if config.compile else model
    optimiser, lr_factor = method.configure_optimiser(config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lr_factor)
    run_key = json.dumps({"params": asdict(config), "data": data_key,
                          "meta_set": meta[0] if meta else None}, sort_keys=True)
    start, history = _resume(out_dir / CHECKPOINT, run_key, method, optimiser, scheduler)
    live = _live(out_dir, resume=start > 0) if dist.main and log_metrics else None
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" and config.amp \
        else torch.autocast("cpu", enabled=False)
    for epoch in range(start, config.epochs):
        data.set_epoch(epoch)
        model.train()
        sums: dict[str, float] = {}
        images, started = 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                   disable=not (progress and dist.main))
        for batch in bar:
            batch = _views_on(device, batch, augment, config.channels_last)
            terms = method.training_step(step, batch, optimiser, autocast)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            images += 2 * len(batch["label"])
            bar.set_postfix(loss=f"{float(terms['total'].detach()):.3f}")
        batches = max(1, len(data))
        record = {name: total / batches for name, total in sums.items()}
        record["lr"] = optimiser.param_groups[0]["lr"]
        record["epoch_s"] = time.perf_counter() - started
        record["images_per_s"] = images / record["epoch_s"]
        scheduler.step()
        history.append(record)
        if dist.main:
            _save_checkpoint(out_dir / CHECKPOINT, run_key, method, optimiser, scheduler, epoch,
                             history)
        if live is not None:
            for name, value in record.items():
                live.log_metric(f"train/{name}", value)
            live.next_step()
    if dist.world_size > 1:  # BN statistics of the last step: rank 0's, as exported
        for buffer in method.buffers():
            torch.distributed.broadcast(buffer, src=0)
    if live is not None:
        live.end()
    return history


def compiled(model: torch.nn.Module, **options) -> Callable:
    """``torch.compile`` as the engine applies it: static shapes, because a dynamic graph's
    backward donates its buffers and Meta-USCL differentiates its forward pass twice."""
    return torch.compile(model, dynamic=False, **options)


def _views_on(device: torch.device, loaded: dict[str, torch.Tensor], augment: AugmentSpec,
              channels_last: bool) -> dict[str, torch.Tensor]:
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


def _live(out_dir: Path, resume: bool):
    from dvclive import Live

    return Live(str(out_dir / "dvclive"), resume=resume, dvcyaml=False, save_dvc_exp=False)


def _save_checkpoint(path: Path, run_key: str, method: Method, optimiser, scheduler,
                     epoch: int, history: list[dict[str, float]]) -> None:
    with atomic_path(path) as temporary:
        torch.save({"run": run_key, "model": method.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": epoch,
                    "torch_rng": torch.get_rng_state(),
                    "history": json.dumps(history)}, temporary)


def _resume(path: Path, run_key: str, method: Method, optimiser,
            scheduler) -> tuple[int, list[dict[str, float]]]:
    """Load the last checkpoint of this very run (same params and data) if there is one;
    return (first epoch to run, history). A checkpoint of other params is ignored."""
    if not path.is_file():
        return 0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("run") != run_key:
        return 0, []
    method.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimiser"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return state["epoch"] + 1, json.loads(state["history"])
