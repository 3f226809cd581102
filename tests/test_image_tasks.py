"""Image tasks (issue 14): the lesion phantom, mask checks, metrics against independent
references, and both task kinds end to end on the phantom."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy.spatial import ConvexHull
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from pipeline.card import RunCard
from pipeline.config import DecodeConfig, TaskConfig, TrainConfig, parse_params
from pipeline.data.ingest import ingest, inventory
from pipeline.data.manifest import load_manifest
from pipeline.data.masks import MaskError, checked_masks, mask_location, read_mask
from pipeline.data.phantom import CLASSES, lesion_image, lesion_specs, write_phantom
from pipeline.data.splits import split_table
from pipeline.evaluate.detection import build_mask_rcnn, coco_annotation, coco_ap, instances
from pipeline.evaluate.evaluation import binary_scores, scores
from pipeline.evaluate.segmentation import LesionSegmenter, segmentation_scores
from pipeline.evaluate.tasks import classify, detect, segment
from pipeline.pretrain.engine import pretrain


def solidity(mask: np.ndarray) -> float:
    points = np.argwhere(mask)
    return mask.sum() / ConvexHull(points).volume  # area / convex hull area (2-D "volume")


def test_phantom_is_deterministic_and_its_classes_differ_as_described():
    specs = lesion_specs(40, seed=3)
    assert [spec.label for spec in specs].count("benign") == 20
    pairs = [lesion_image(spec) for spec in specs]
    again = lesion_image(specs[0])
    assert pairs[0][0].tobytes() == again[0].tobytes()
    by_class: dict[str, list[float]] = {name: [] for name in CLASSES}
    posterior: dict[str, list[float]] = {name: [] for name in CLASSES}
    for spec, (image, mask) in zip(specs, pairs, strict=True):
        truth = np.asarray(mask) > 0
        assert set(np.unique(np.asarray(mask))) == {0, 255}
        by_class[spec.label].append(solidity(truth))
        pixels = np.asarray(image, dtype=float)
        columns = np.flatnonzero(truth.any(axis=0))
        bottom = np.flatnonzero(truth.any(axis=1)).max()
        below = pixels[bottom + 2:bottom + 20, columns].mean()
        beside = pixels[bottom + 2:bottom + 20].mean()
        posterior[spec.label].append(below / beside)
    assert min(by_class["benign"]) > 0.95 > max(by_class["malignant"])  # spiculated outline
    assert np.median(posterior["benign"]) > 1.1 > 0.9 > np.median(posterior["malignant"])


def write_mask(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path)
    return path


def test_bad_masks_each_get_a_clear_error(tmp_path):
    good = np.zeros((6, 8), np.uint8)
    good[2:4, 3:5] = 255
    assert read_mask(write_mask(tmp_path / "good.png", good), (8, 6)).sum() == 4
    assert read_mask(write_mask(tmp_path / "ones.png", good // 255), (8, 6)).sum() == 4
    cases = {
        "wrong size": (write_mask(tmp_path / "small.png", good[:5]),
                       "mask is 8x5 px, its image 8x6"),
        "empty": (write_mask(tmp_path / "empty.png", good * 0), "empty mask"),
        "grey levels": (write_mask(tmp_path / "grey.png", np.where(good > 0, 255 - (
            np.arange(8) == 3) * 127, 0)), "not a binary mask (values 0, 128, 255"),
        "no file": (tmp_path / "absent.png", "no such mask file"),
    }
    (tmp_path / "text.png").write_text("not an image")
    cases["not an image"] = (tmp_path / "text.png", "not a readable image")
    for name, (path, message) in cases.items():
        with pytest.raises(MaskError, match=re.escape(message)) as raised:
            read_mask(path, (8, 6))
        assert str(raised.value).startswith(str(path)), name
    with pytest.raises(MaskError, match="leaves the mask folder"):
        mask_location(tmp_path, "../outside.png")
    with pytest.raises(MaskError, match="empty mask column"):
        mask_location(tmp_path, "")


def test_inventory_hashes_masks_and_does_not_list_them_as_images(tmp_path):
    """BUSI keeps each mask beside its image: the masks are no items, and a changed mask
    changes the listing (so the stages that use it rerun)."""
    root = tmp_path / "busi"
    write_phantom(tmp_path / "phantom", 4, seed=1)
    for spec in lesion_specs(4, seed=1):
        folder = root / spec.label
        folder.mkdir(parents=True, exist_ok=True)
        for sub, suffix in (("images", ""), ("masks", "_mask")):
            (folder / f"{spec.name}{suffix}.png").write_bytes(
                (tmp_path / "phantom" / sub / f"{spec.name}.png").read_bytes())
    (root / "labels.csv").write_text("path,label,mask\n" + "".join(
        f"{spec.label}/{spec.name}.png,{spec.label},{spec.label}/{spec.name}_mask.png\n"
        for spec in lesion_specs(4, seed=1)))
    sources = inventory(root, root / "labels.csv", tmp_path / "out")
    assert sorted(source.relative_path for source in sources) == sorted(
        f"{spec.label}/{spec.name}.png" for spec in lesion_specs(4, seed=1))
    first = sources[0]
    mask_file = root / first.labels["mask"]
    assert first.labels["mask_sha256"] == hashlib.sha256(mask_file.read_bytes()).hexdigest()
    write_mask(mask_file, np.asarray(Image.open(mask_file))[::-1])
    again = inventory(root, root / "labels.csv", tmp_path / "out")
    assert again[0].labels["mask_sha256"] != first.labels["mask_sha256"]


def test_class_folders_label_by_first_folder(tmp_path):
    write_phantom(tmp_path / "phantom", 4, seed=2)
    for spec in lesion_specs(4, seed=2):
        (tmp_path / "cls" / spec.label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "cls" / spec.label / f"{spec.name}.png").write_bytes(
            (tmp_path / "phantom" / "images" / f"{spec.name}.png").read_bytes())
    sources = inventory(tmp_path / "cls", None, tmp_path / "out", class_folders=True)
    assert {source.relative_path.split("/")[0] for source in sources} == set(CLASSES)
    assert all(source.labels["label"] == source.relative_path.split("/")[0]
               for source in sources)


def test_segmentation_scores_by_hand():
    truth = np.zeros((4, 4), bool)
    truth[:2, :2] = True                     # 4 lesion pixels
    predicted = np.zeros((4, 4), bool)
    predicted[:2, 1:3] = True                # 2 hit, 2 outside
    assert segmentation_scores(predicted, truth) == {"dice": 0.5, "ppv": 0.5,
                                                     "sensitivity": 0.5}
    assert segmentation_scores(np.zeros_like(truth), truth) == {"dice": 0.0, "ppv": 0.0,
                                                                "sensitivity": 0.0}


def test_binary_scores_match_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    p_malignant = np.clip(labels * 0.3 + rng.uniform(0, 0.7, 200), 0, 1)
    table = pd.DataFrame({"label": labels, "p_benign": 1 - p_malignant,
                                            "p_malignant": p_malignant, "fold": 0, "seed": 0})
    result = binary_scores(scores(table, list(CLASSES), None)["pooled"], "malignant")
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, (p_malignant > 0.5).astype(int), average="binary")
    assert result["precision"] == pytest.approx(precision)
    assert result["recall"] == pytest.approx(recall)
    assert result["f1"] == pytest.approx(f1)
    assert result["auc"] == pytest.approx(roc_auc_score(labels, p_malignant))
    assert result["accuracy"] == pytest.approx(((p_malignant > 0.5) == labels).mean())


def test_the_decoder_predicts_a_map_of_the_input_size():
    model = LesionSegmenter("resnet18", None)
    assert model(torch.zeros(2, 3, 48, 64)).shape == (2, 48, 64)
    trainable = model.trainable("decoder")
    assert all(not parameter.requires_grad for parameter in model.stages.parameters())
    assert len(trainable) == len(list(model.lateral.parameters()) + list(
        model.smooth.parameters()) + list(model.head.parameters()))


@pytest.fixture(scope="module")
def phantom_task(tmp_path_factory):
    """20 phantom images decoded with their masks (one damaged), 4 folds by patient, and a
    random-init backbone."""
    root = tmp_path_factory.mktemp("tasks")
    write_phantom(root / "lesions", 20, seed=4)
    broken = root / "lesions" / "masks" / "lesion_019.png"
    write_mask(broken, np.zeros((96, 128)))  # emptied: this item is left out, named
    ingest(root / "lesions" / "images", root / "lesions" / "labels.csv", root / "data",
           DecodeConfig(workers=1), progress=False)
    manifest = load_manifest(root / "data")
    split = split_table(manifest.videos, 0.2, 0, folds=4)
    pretrain(manifest, manifest.videos, TrainConfig(method="scratch", image_size=32),
             root / "models", progress=False, log_metrics=False)
    return root, manifest, split, RunCard.load(root / "models" / "card.json")


@pytest.mark.slow
def test_segmentation_task_learns_the_lesions_and_names_the_bad_mask(phantom_task, tmp_path):
    root, manifest, split, card = phantom_task
    task = TaskConfig(kind="segmentation", dataset="lesions", classes=list(CLASSES), epochs=8,
                      image_size=48, batch_size=8, lr=0.003, workers=0)
    metrics = segment(task, manifest, split, root / "lesions", card,
                      root / "models" / "backbone.pt", tmp_path)
    assert list(metrics["excluded"].values()) == [
        f"lesion_019.png: {root / 'lesions' / 'masks' / 'lesion_019.png'}: empty mask "
        "(no foreground pixel)"]
    assert metrics["last_epoch"]["images"] == 19
    assert metrics["last_epoch"]["pooled"]["dice"] > 0.5  # far above an empty or full map
    assert set(metrics["per_class"]) == set(CLASSES)


@pytest.mark.slow
def test_classification_task_writes_the_papers_and_binary_metrics(phantom_task, tmp_path):
    root, manifest, split, card = phantom_task
    task = TaskConfig(kind="classification", dataset="lesions", classes=list(CLASSES),
                      positive="malignant", epochs=2, image_size=32, workers=0)
    metrics = classify(task, manifest, split, card, root / "models" / "backbone.pt", tmp_path)
    assert metrics["last_epoch"]["pooled"]["samples"] == 20
    assert set(metrics["binary"]) == {"last_epoch", "best_epoch_optimistic"}
    assert metrics["binary"]["last_epoch"]["positive"] == "malignant"
    assert (tmp_path / "tables" / "predictions.parquet").is_file()
    assert any((tmp_path / "figures").iterdir())


def test_tasks_in_params_are_validated():
    base = {"data": {"lesions": {"root": "x"}}}
    params = parse_params({**base, "tasks": {"t": {"kind": "segmentation",
                                                   "dataset": "lesions"}}})
    assert params.task("t").kind == "segmentation"
    for tasks, message in (({"t": {"kind": "regression", "dataset": "lesions"}}, "regression"),
                           ({"t": {"kind": "classification", "dataset": "nope",
                                   "classes": ["a", "b"]}}, "not under data"),
                           ({"t": {"kind": "classification", "dataset": "lesions",
                                   "classes": ["a", "b"], "positive": "c"}}, "positive")):
        with pytest.raises(ValueError, match=message):
            parse_params({**base, "tasks": tasks})
    classification = TaskConfig(kind="classification", dataset="lesions", classes=["a", "b"],
                                epochs=7, image_size=96, mode="last_block")
    finetune = classification.finetune()  # what the fine-tuning engine runs
    assert (finetune.classes, finetune.schedule(), finetune.image_size, finetune.mode,
            finetune.probes) == (["a", "b"], (7, 32), 96, "last_block", None)


def test_ultrabench_prepared_splits_are_read_in_place(tmp_path):
    """UltraBench's layout (``train_val.json`` + ``test.json``, images and 0/1 tumour and scan
    masks under one root): images become items with label, patient group and mask; no mask
    is taken for an image."""
    root = tmp_path / "stanford_thyroid_v1"
    specs = lesion_specs(6, seed=5)
    write_phantom(tmp_path / "phantom", 6, seed=5)
    examples = []
    for spec in specs:
        image = (tmp_path / "phantom" / "images" / f"{spec.name}.png").read_bytes()
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "images" / f"{spec.name}.png").write_bytes(image)
        tumour = np.asarray(Image.open(tmp_path / "phantom" / "masks" / f"{spec.name}.png")) > 0
        write_mask(root / "masks" / "tumor" / f"{spec.name}.png", tumour)
        write_mask(root / "masks" / "scan" / f"{spec.name}.png", np.ones_like(tumour))
        examples.append({"patient": str(spec.patient), "image": f"images/{spec.name}.png",
                         "tumor_mask": f"masks/tumor/{spec.name}.png",
                         "scan_mask": f"masks/scan/{spec.name}.png",
                         "label": CLASSES.index(spec.label), "pathology": spec.label})
    (root / "train_val.json").write_text(json.dumps(examples[:4]))
    (root / "test.json").write_text(json.dumps(examples[4:]))
    ingest(root, root / "ultrabench", tmp_path / "out", DecodeConfig(workers=1),
           progress=False)
    videos = load_manifest(tmp_path / "out").videos.sort_values("source_path")
    assert videos["source_path"].tolist() == [f"images/{spec.name}.png" for spec in specs]
    assert videos["label"].tolist() == [spec.label for spec in specs]
    assert videos["group"].tolist() == [str(spec.patient) for spec in specs]
    assert videos["ultrabench_split"].tolist() == ["train_val"] * 4 + ["test"] * 2
    masks, errors = checked_masks(videos, root)
    assert not errors and all(masks[v].sum() > 0 for v in videos["video_id"])
    (root / "test.json").write_text("{not json")
    with pytest.raises(ValueError, match="test.json: not valid JSON"):
        inventory(root, root / "ultrabench", tmp_path / "again")


def coco_truth(regions: dict[int, np.ndarray]) -> tuple[dict, dict[int, dict]]:
    annotations = {image: coco_annotation(image, region) for image, region in regions.items()}
    for number, annotation in enumerate(annotations.values(), start=1):
        annotation["id"] = number
    return {"images": [{"id": image, "width": region.shape[1], "height": region.shape[0]}
                       for image, region in regions.items()],
            "annotations": list(annotations.values()),
            "categories": [{"id": 1, "name": "lesion"}]}, annotations


def test_coco_ap_of_perfect_shifted_and_missing_detections():
    regions = {}
    for image in (1, 2):
        region = np.zeros((40, 50), bool)
        region[10:20, 12 + image:30] = True
        regions[image] = region
    truth, annotations = coco_truth(regions)
    perfect = [{"image_id": image, "category_id": 1, "bbox": a["bbox"], "score": 0.9,
                "segmentation": a["segmentation"]} for image, a in annotations.items()]
    assert coco_ap(truth, perfect) == {kind: {"ap": 1.0, "ap50": 1.0, "ap75": 1.0}
                                       for kind in ("bbox", "segm")}
    shifted = [{**d, "bbox": [d["bbox"][0] + 20, *d["bbox"][1:]]} for d in perfect]
    assert coco_ap(truth, shifted)["bbox"] == {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    assert coco_ap(truth, [])["segm"]["ap"] == 0.0
    # one image right, one missed: AP50 = recall-weighted precision = 0.5 (101-point COCO)
    assert coco_ap(truth, perfect[:1])["bbox"]["ap50"] == pytest.approx(0.50, abs=0.01)
    assert coco_ap(truth, perfect[:1], image_ids=[1])["bbox"]["ap50"] == pytest.approx(1.0)


def test_mask_rcnn_trunk_holds_the_exported_backbone(phantom_task):
    root, _, _, card = phantom_task
    weights = torch.load(root / "models" / "backbone.pt", weights_only=True)
    model = build_mask_rcnn("resnet18", root / "models" / "backbone.pt", "frozen_stem", 96,
                            card.normalisation)
    trunk = model.backbone.body
    assert torch.equal(trunk.conv1.weight, weights["conv1.weight"])
    assert torch.equal(trunk.layer4[1].bn2.running_var, weights["layer4.1.bn2.running_var"])
    assert not trunk.layer1[0].conv1.weight.requires_grad  # the seeds' frozen stem
    assert trunk.layer2[0].conv1.weight.requires_grad


def test_instances_are_connected_regions():
    mask = np.zeros((10, 10), bool)
    mask[1:3, 1:3] = True
    mask[6:9, 5:9] = True
    mask[3, 3] = True  # touches the first region diagonally: one lesion
    found = instances(mask)
    assert [int(region.sum()) for region in found] == [5, 12]


@pytest.mark.slow
def test_detection_task_reports_coco_ap(phantom_task, tmp_path):
    root, manifest, split, card = phantom_task
    task = TaskConfig(kind="detection", dataset="lesions", classes=list(CLASSES), epochs=1,
                      image_size=64, batch_size=2, lr=0.005, mode="frozen_stem", workers=0)
    metrics = detect(task, manifest, split, root / "lesions", card,
                     root / "models" / "backbone.pt", tmp_path)
    assert metrics["last_epoch"]["images"] == 19 and len(metrics["excluded"]) == 1
    for kind in ("bbox", "segm"):
        assert all(0 <= value <= 1 for value in metrics["last_epoch"]["pooled"][kind].values())
    coco = json.loads((tmp_path / "tables" / "coco.json").read_text())
    assert len(coco["0"]["truth"]["annotations"]) >= 19  # a lesion or more per image
    assert (tmp_path / "figures" / "loss.png").is_file()
