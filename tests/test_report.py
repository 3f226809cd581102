"""`uspipe report` from two tiny experiments (evaluate outputs built from known predictions)."""


import numpy as np
import pandas as pd
from typer.testing import CliRunner

from pipeline.atomic import write_json
from pipeline.card import Normalisation, RunCard
from pipeline.cli import app
from pipeline.evaluate.detection import DetectionResult, coco_annotation
from pipeline.evaluate.detection import summary as detection_summary
from pipeline.evaluate.evaluation import (
    binary_scores,
    draw_figures,
    evaluate,
    plot_tables,
    selected,
)
from pipeline.evaluate.segmentation import summary

CLASSES = ["covid", "pneumonia", "regular"]


def experiment(folder, method, right, seed=0):
    """Two folds x two epochs; ``right`` test frames of 6 per fold correct at the end."""
    curves = pd.DataFrame({"fold": [0, 0, 1, 1], "seed": 0, "epoch": [0, 1, 0, 1],
                           "train_loss": [1.0, 0.5, 1.0, 0.5], "train_accuracy": 0.5,
                           "test_accuracy": [1.0, right / 6, 1.0, right / 6]})
    rows = []
    for fold in (0, 1):
        for epoch in (0, 1):
            for i in range(6):
                label = i % 3
                correct = epoch == 0 or i < right
                guess = label if correct else (label + 1) % 3
                probabilities = {f"p_{name}": 0.1 for name in CLASSES}
                probabilities[f"p_{CLASSES[guess]}"] = 0.8
                rows.append({"fold": fold, "seed": 0, "epoch": epoch, "label": label,
                             "video_id": f"v{fold}-{i}", "group": f"g{fold}-{i}",
                             "kept_index": 0, **probabilities})
    predictions = pd.DataFrame(rows)
    write_json(folder / "metrics.json", evaluate(predictions, curves, CLASSES, "regular"))
    selected(predictions, curves, "last_epoch").to_parquet(folder / "predictions.parquet")
    RunCard(method=method, preset="code", backbone="resnet18", classes=CLASSES, train_videos=9,
            labelled_videos=9, epochs=3, params={"method": method, "seed": seed}, data="0",
            normalisation=Normalisation((0.5,) * 3, (0.25,) * 3)).save(folder / "card.json")
    draw_figures(plot_tables(predictions, curves, CLASSES), CLASSES, folder / "figures", method)


def test_report_renders_one_row_per_experiment(tmp_path):
    experiment(tmp_path / "uscl", "uscl", right=6)
    experiment(tmp_path / "scratch", "scratch", right=3)
    out = tmp_path / "out" / "report"
    result = CliRunner().invoke(app, ["report", str(tmp_path / "uscl"),
                                      str(tmp_path / "scratch"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.with_suffix(".md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| uscl | uscl (code)")
            or line.startswith("| scratch | scratch (code)")]
    assert len(rows) == 2
    assert "| uscl | uscl (code) | 3 | 100.0 | 100.0 | 100.0 | 100.0 | 100.0 ± 0.0 |" in rows[0]
    assert "| 50.0 |" in rows[1] and rows[1].endswith("| 100.0 |")  # optimistic: epoch 0
    assert "optimistic" in text and "](../uscl/figures/confusion.png)" in text
    # uscl right on all 12 test videos, scratch on 6: +50 points against scratch
    difference = next(line for line in text.splitlines() if line.startswith("| uscl | scratch"))
    assert difference.startswith("| uscl | scratch | **+50.0 [")
    page = out.with_suffix(".html").read_text()
    assert page.count("data:image/png;base64,") == 6 and "<td>scratch</td>" in page
    assert "Paired differences" in page and "<td>+50.0 [" in page


def test_report_compares_recipes_over_their_pretraining_seeds(tmp_path):
    for name, method, right, seed in (("uscl-s0", "uscl", 6, 0), ("uscl-s1", "uscl", 4, 1),
                                      ("scratch-s0", "scratch", 3, 0),
                                      ("scratch-s1", "scratch", 2, 1)):
        experiment(tmp_path / name, method, right, seed)
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", *(str(tmp_path / name) for name in (
        "uscl-s0", "uscl-s1", "scratch-s0", "scratch-s1")), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.with_suffix(".md").read_text()
    recipes = text.split("## Recipes over pretraining seeds")[1].splitlines()
    row = next(line for line in recipes if line.startswith("| uscl-s0 + uscl-s1 |"))
    # 12 test videos a run: uscl right on 12 and 8, scratch on 6 and 4 -> (20 - 10) / 24
    assert row.startswith("| uscl-s0 + uscl-s1 | scratch-s0 + scratch-s1 | **+41.7 [")
    assert sum(line.startswith("| ") for line in recipes) == 2  # header, the one pair
    single = next(line for line in text.splitlines() if line.startswith("| uscl-s1 | scratch-s0"))
    assert single.startswith("| uscl-s1 | scratch-s0 | +16.7 [")  # 8 - 6 of 12, per run
    assert "Recipes over pretraining seeds" in out.with_suffix(".html").read_text()
    # one run a recipe, or seeds of the reference recipe alone: nothing to compare
    for names in (("uscl-s0", "scratch-s0"), ("scratch-s0", "scratch-s1")):
        result = CliRunner().invoke(app, ["report", *(str(tmp_path / name) for name in names),
                                          "-o", str(out)])
        assert result.exit_code == 0 and "Recipes" not in out.with_suffix(".md").read_text()
        assert "Recipes" not in out.with_suffix(".html").read_text()


def test_report_names_a_folder_that_is_not_an_experiment(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "metrics.json" in " ".join(result.output.split())
    assert "not an evaluate output" in " ".join(result.output.split())


def test_report_escapes_names_and_refuses_a_string_metric(tmp_path):
    experiment(tmp_path / "a|b *c*", "uscl", right=6)
    experiment(tmp_path / "scratch", "scratch", right=3)
    out = tmp_path / "out" / "report"
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(tmp_path / "a|b *c*"),
                                 str(tmp_path / "scratch"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.with_suffix(".md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| run |"))
    row = next(line for line in lines if line.startswith("| a"))
    assert row.startswith("| a\\|b \\*c\\* | uscl (code) |")
    assert row.count(" | ") == header.count(" | ")  # the escaped | splits no cell
    metrics = tmp_path / "scratch" / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"accuracy": 0.5', '"accuracy": "0.5"', 1))
    result = runner.invoke(app, ["report", str(tmp_path / "scratch"), "-o", str(out)])
    assert result.exit_code == 2
    assert "metrics.json" in result.output and "not a number" in result.output


def test_report_adds_a_table_per_image_task(tmp_path):
    """A classification task (binary metrics) and a segmentation task under tasks/: one
    table each, a row per run that ran it."""
    for name, right in (("uscl", 6), ("scratch", 3)):
        experiment(tmp_path / name, name, right=right)
    labels = [0, 1] * 4
    guesses = {"uscl": labels, "scratch": [1] * 8}  # scratch calls everything malignant
    for name, guessed in guesses.items():
        table = pd.DataFrame({"fold": [0, 0, 1, 1] * 2, "seed": 0, "epoch": 0, "label": labels,
                              "video_id": [f"i{k}" for k in range(8)],
                              "p_benign": [0.9 if g == 0 else 0.1 for g in guessed]})
        table["p_malignant"] = 1 - table["p_benign"]
        curves = pd.DataFrame({"fold": [0, 1], "seed": 0, "epoch": 0, "train_loss": 1.0,
                               "train_accuracy": 0.5, "test_accuracy": 0.5})
        metrics = evaluate(table, curves, ["benign", "malignant"], None)
        metrics["binary"] = {selection: binary_scores(metrics[selection]["pooled"], "malignant")
                             for selection in ("last_epoch", "best_epoch_optimistic")}
        metrics["protocol"] = {"kind": "classification"}
        write_json(tmp_path / name / "tasks" / "lesions" / "metrics.json", metrics)
    scores = pd.DataFrame({"fold": [0, 0, 1, 1], "seed": 0, "dice": [0.8, 0.6, 0.7, 0.5],
                           "ppv": 0.9, "sensitivity": [1.0, 0.5, 1.0, 0.5]})
    write_json(tmp_path / "uscl" / "tasks" / "masks" / "metrics.json",
               {"last_epoch": summary(scores), "excluded": {"v": "bad mask"},
                "protocol": {"kind": "segmentation"}})
    region = np.zeros((20, 20), bool)
    region[4:9, 5:12] = True
    truth = {"images": [{"id": 1, "width": 20, "height": 20}],
             "annotations": [{**coco_annotation(1, region), "id": 1}],
             "categories": [{"id": 1, "name": "lesion"}]}
    found = [{"image_id": 1, "category_id": 1, "score": 0.9,
              "bbox": truth["annotations"][0]["bbox"],
              "segmentation": truth["annotations"][0]["segmentation"]}]
    write_json(tmp_path / "scratch" / "tasks" / "boxes" / "metrics.json",
               {"last_epoch": detection_summary({0: DetectionResult(found, truth, {0: [1]},
                                                                    pd.DataFrame())}),
                "excluded": {}, "protocol": {"kind": "detection"}})
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(tmp_path / "uscl"),
                                      str(tmp_path / "scratch"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.with_suffix(".md").read_text().splitlines()
    start = lines.index("## Task boxes (last epoch, %)")
    assert lines[start + 2].startswith("| run | method (preset) | box AP | box AP50 |")
    assert lines[start + 4] == ("| scratch | scratch (code) | 100.0 | 100.0 | 100.0 | 100.0 "
                                "| 100.0 | 100.0 | 100.0 ± 0.0 | 1 | 0 |")
    start = lines.index("## Task lesions (last epoch, %)")
    assert lines[start + 2].startswith("| run | method (preset) | malignant precision |")
    assert lines[start + 4].startswith("| uscl | uscl (code) | 100.0 | 100.0 | 100.0 | 1")
    # scratch: precision 4/8, recall 4/4, F1 2/3, accuracy 4/8
    assert lines[start + 5].startswith("| scratch | scratch (code) | 50.0 | 100.0 | 66.7 |")
    start = lines.index("## Task masks (last epoch, %)")
    assert lines[start + 4] == ("| uscl | uscl (code) | 65.0 (65.0 ± 7.1) | 90.0 (90.0 ± 0.0) "
                                "| 75.0 (75.0 ± 0.0) | 4 | 1 |")
    assert len(lines) > start + 5 and not lines[start + 5].startswith("| scratch")
    assert "<h2>Task masks (last epoch, %)</h2>" in out.with_suffix(".html").read_text()
