"""Lesion detection and instance segmentation with Mask R-CNN on the pretrained backbone (USCL
Table 3: UDIAT-B, Mask R-CNN with a ResNet18-FPN whose backbone is the pretrained one),
k-fold by patient, COCO box and mask AP from pycocotools (docs/methods.md §8.5).

The backbone is torchvision's ResNet-FPN (frozen BatchNorm) with the exported weights loaded
into its trunk; region proposals are cut to a tenth of the COCO defaults (``PROPOSALS``);
``mode``: ``frozen_stem`` (the seeds' setting: conv1, bn1 and layer1 frozen) or ``full``.
Training as USCL's released code: SGD 0.005 (``tasks.<name>.lr``), momentum 0.9, batch 2,
horizontal flips. Each connected region of a mask is one lesion instance. After the
last epoch every test fold's detections are pooled into one COCO evaluation (AP at IoU
0.50:0.95, AP50, AP75 for boxes and masks); per fold too (mean ± std).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pipeline.backbones import load_backbone
from pipeline.card import Normalisation
from pipeline.config import TaskConfig
from pipeline.data.frames import frame_locations
from pipeline.data.manifest import Manifest
from pipeline.evaluate.metrics import mean_std
from pipeline.tv_compat import torchvision

TRAINABLE_LAYERS = {"frozen_stem": 3, "full": 5}  # ResNet stages left trainable
# Region proposals kept before / after the RPN's NMS, and detections per image: a tenth of
# torchvision's COCO defaults (2000/2000, 1000/1000, 100), for lesion images that hold a few
# lesions each and a CPU.
PROPOSALS = {"rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 200,
             "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 100,
             "box_detections_per_img": 10}
AP_NAMES = ("ap", "ap50", "ap75")  # COCOeval.stats[0:3]


def build_mask_rcnn(backbone: str, weights: Path | None, mode: str, image_size: int,
                    normalisation: Normalisation) -> torch.nn.Module:
    """Mask R-CNN (lesion vs background) on a ResNet-FPN whose trunk holds ``weights``;
    images are resized so their short side is ``image_size``."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    fpn = resnet_fpn_backbone(backbone_name=backbone, weights=None,
                              trainable_layers=TRAINABLE_LAYERS[mode])
    if weights is not None:  # checked against the architecture by load_backbone
        fpn.body.load_state_dict(load_backbone(backbone, weights)[0].state_dict())
    return MaskRCNN(fpn, num_classes=2, min_size=image_size, max_size=4 * image_size,
                    image_mean=list(normalisation.mean), image_std=list(normalisation.std),
                    **PROPOSALS)


def instances(mask: np.ndarray) -> list[np.ndarray]:
    """Each 8-connected foreground region of a boolean mask, as its own boolean mask."""
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
    return [labelled == index for index in range(1, count + 1)]


class LesionInstances(Dataset):
    """An item's stored image as a [0, 1] float tensor and its Mask R-CNN target (one box and
    mask per lesion); training flips both, drawn per (seed, epoch, index)."""

    def __init__(self, manifest: Manifest, items: pd.DataFrame, masks: dict[str, np.ndarray],
                 train: bool, seed: int = 0) -> None:
        self.ids = items["video_id"].tolist()
        self.locations = [frames[0] for frames in frame_locations(manifest, self.ids)]
        self.masks = [masks[identifier] for identifier in self.ids]
        self.train, self.seed, self.epoch = train, seed, 0

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mask = self.masks[index]
        image = self.locations[index].image(max(mask.shape)).resize(mask.shape[::-1])
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        regions = torch.from_numpy(np.stack(instances(mask))).to(torch.uint8)
        if self.train and np.random.default_rng([self.seed, self.epoch, index]).uniform() < 0.5:
            pixels, regions = pixels.flip(-1), regions.flip(-1)
        boxes = torchvision.ops.masks_to_boxes(regions)
        boxes[:, 2:] += 1  # inclusive pixel bounds -> box edges
        return pixels, {"boxes": boxes, "labels": torch.ones(len(regions), dtype=torch.int64),
                        "masks": regions}


def _collate(batch):
    return tuple(zip(*batch, strict=True))


@dataclass
class DetectionResult:
    detections: list[dict]  # COCO results: image_id, category_id, bbox, score, segmentation
    truth: dict             # COCO ground truth of every test image
    folds: dict[int, list[int]]  # fold -> its image ids (for per-fold AP)
    curves: pd.DataFrame


def run_fold(manifest: Manifest, items: pd.DataFrame, masks: dict[str, np.ndarray], fold: int,
             seed: int, task: TaskConfig, backbone: str, weights: Path | None,
             normalisation: Normalisation, progress: bool = False
             ) -> tuple[list[dict], list[dict], list[dict], pd.DataFrame]:
    """Train on every fold but ``fold``; (detections, images, annotations, curves) of the
    test images after the last epoch, image ids = their row number in ``items``."""
    torch.manual_seed(seed)
    train_items, test_items = items[items["fold"] != fold], items[items["fold"] == fold]
    if train_items.empty or test_items.empty:
        raise ValueError(f"fold {fold} leaves an empty train or test side")
    train_data = LesionInstances(manifest, train_items, masks, train=True, seed=seed)
    model = build_mask_rcnn(backbone, weights, task.mode, task.image_size, normalisation)
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                lr=task.lr, momentum=0.9, weight_decay=task.weight_decay)
    loader = DataLoader(train_data, batch_size=task.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed),
                        num_workers=task.workers, collate_fn=_collate)
    curves = []
    for epoch in tqdm(range(task.epochs), desc=f"fold {fold} seed {seed}",
                      disable=not progress):
        train_data.epoch = epoch
        model.train()
        total, steps = 0.0, 0
        for images, targets in loader:
            loss = sum(model(list(images), list(targets)).values())
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total, steps = total + loss.item(), steps + 1
        curves.append({"fold": fold, "seed": seed, "epoch": epoch,
                       "train_loss": total / max(1, steps)})
    model.eval()
    test_data = LesionInstances(manifest, test_items, masks, train=False)
    detections, images, annotations = [], [], []
    with torch.no_grad():
        for image_id, (pixels, target) in zip(test_items.index, test_data, strict=True):
            height, width = pixels.shape[-2:]
            images.append({"id": int(image_id), "width": int(width), "height": int(height)})
            for region in target["masks"].numpy().astype(bool):
                annotations.append(coco_annotation(image_id, region))
            output = model([pixels])[0]
            for box, score, soft in zip(output["boxes"], output["scores"], output["masks"],
                                        strict=True):
                x0, y0, x1, y1 = box.tolist()
                rle = coco_mask.encode(np.asfortranarray((soft[0] >= 0.5).numpy()
                                                         .astype(np.uint8)))
                rle["counts"] = rle["counts"].decode()
                detections.append({"image_id": int(image_id), "category_id": 1,
                                   "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score),
                                   "segmentation": rle})
    return detections, images, annotations, pd.DataFrame(curves)


def coco_annotation(image_id: int, region: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(region.astype(np.uint8)))
    x, y, w, h = coco_mask.toBbox(rle).tolist()
    rle["counts"] = rle["counts"].decode()
    return {"image_id": int(image_id), "category_id": 1, "segmentation": rle,
            "area": float(coco_mask.area(rle)), "bbox": [x, y, w, h], "iscrowd": 0}


def cross_validate(manifest: Manifest, items: pd.DataFrame, masks: dict[str, np.ndarray],
                   task: TaskConfig, backbone: str, weights: Path | None,
                   normalisation: Normalisation, progress: bool = True
                   ) -> dict[int, DetectionResult]:
    """Every fold of every seed; per seed, the pooled COCO ground truth and detections."""
    items = items.reset_index(drop=True)
    results = {}
    for seed in task.seeds:
        detections, images, annotations, curves, folds = [], [], [], [], {}
        for fold in sorted(int(fold) for fold in items["fold"].unique()):
            found, shown, truth, curve = run_fold(manifest, items, masks, fold, seed, task,
                                                  backbone, weights, normalisation, progress)
            detections += found
            images += shown
            annotations += truth
            curves.append(curve)
            folds[fold] = [image["id"] for image in shown]
        for number, annotation in enumerate(annotations, start=1):
            annotation["id"] = number
        results[seed] = DetectionResult(detections, {
            "images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "lesion"}]}, folds, pd.concat(curves))
    return results


def coco_ap(truth: dict, detections: list[dict], image_ids: list[int] | None = None
            ) -> dict[str, dict[str, float]]:
    """COCO AP, AP50 and AP75 of boxes (``bbox``) and masks (``segm``), by pycocotools; over
    ``image_ids`` only if given. No detection at all scores 0."""
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
        ground = COCO()
        ground.dataset = truth
        ground.createIndex()
        result = {}
        for kind in ("bbox", "segm"):
            if not detections:
                result[kind] = dict.fromkeys(AP_NAMES, 0.0)
                continue
            evaluation = COCOeval(ground, ground.loadRes(detections), kind)
            if image_ids is not None:
                evaluation.params.imgIds = image_ids
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
            result[kind] = {name: max(0.0, float(value))  # -1: no ground truth
                            for name, value in zip(AP_NAMES, evaluation.stats[:3],
                                                   strict=True)}
    return result


def summary(results: dict[int, DetectionResult]) -> dict[str, object]:
    """AP pooled over the folds (mean over seeds) and per fold (mean ± std)."""
    pooled = [coco_ap(result.truth, result.detections) for result in results.values()]
    per_fold = [coco_ap(result.truth, result.detections, ids) for result in results.values()
                for ids in result.folds.values()]
    return {"pooled": {kind: {name: float(np.mean([p[kind][name] for p in pooled]))
                              for name in AP_NAMES} for kind in ("bbox", "segm")},
            "per_fold": {kind: {name: mean_std([p[kind][name] for p in per_fold])
                                for name in AP_NAMES} for kind in ("bbox", "segm")},
            "images": len(next(iter(results.values())).truth["images"])}
