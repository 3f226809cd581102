"""Stage evaluate: the papers' metrics (honest headline + optimistic protocol), plots, figures."""

from pathlib import Path

import pandas as pd

from pipeline.atomic import atomic_path, write_json, write_text
from pipeline.card import RunCard
from pipeline.config import load_params
from pipeline.console import run_stage
from pipeline.evaluate.evaluation import draw_figures, evaluate, plot_tables, selected


def main(finetune: Path = Path("models/finetune"), backbone: Path = Path("models/pretrain"),
         out: Path = Path("results")) -> None:
    config = load_params().finetune
    classes = list(config.classes)
    predictions = pd.read_parquet(finetune / "predictions.parquet")
    curves = pd.read_csv(finetune / "curves.csv")
    card = RunCard.load(backbone / "card.json")
    metrics = evaluate(predictions, curves, classes, config.normal_class)
    epochs, batch = config.schedule()
    metrics["protocol"] = {"pretraining": {"method": card.method, "preset": card.preset,
                                           "backbone": card.backbone, "epochs": card.epochs},
                           "finetune": {"mode": config.mode, "frozen_bn": config.frozen_bn,
                                        "epochs": epochs, "batch_size": batch,
                                        "image_size": config.image_size,
                                        "seeds": list(config.seeds),
                                        "fold_seeds": config.fold_seeds}}
    write_json(out / "metrics.json", metrics)
    with atomic_path(out / "predictions.parquet") as temporary:  # for paired comparisons
        selected(predictions, curves, "last_epoch").to_parquet(temporary, index=False)
    card.save(out / "card.json")
    tables = plot_tables(predictions, curves, classes)
    for name, table in tables.items():
        write_text(out / "plots" / f"{name}.csv", table.to_csv(index=False))
    draw_figures(tables, classes, out / "figures", card.title)
    headline = metrics["last_epoch"]
    print(f"evaluate: {card.method}: accuracy {headline['pooled']['accuracy']:.3f} "
          f"(per run {headline['per_run']['accuracy']['mean']:.3f} ± "
          f"{headline['per_run']['accuracy']['std']:.3f}), macro F1 "
          f"{headline['pooled']['macro_f1']:.3f}; optimistic (best test epoch) accuracy "
          f"{metrics['best_epoch_optimistic']['pooled']['accuracy']:.3f}")


if __name__ == "__main__":
    run_stage(main)
