"""Stage split@<dataset>: seeded grouped stratified train/val split (+ k folds) of videos."""

from pathlib import Path

from pipeline.atomic import write_text
from pipeline.config import load_params
from pipeline.console import run_stage
from pipeline.data.manifest import SPLIT_FILE, load_manifest
from pipeline.data.splits import copies_across_groups, split_table


def main(dataset: str, out: Path = Path("data")) -> None:
    params = load_params()
    manifest = load_manifest(out / dataset)
    table = split_table(manifest.videos, params.split.val_fraction, params.split.seed,
                        params.dataset(dataset).folds)
    write_text(out / dataset / SPLIT_FILE, table.to_csv(index=False))
    copies = copies_across_groups(manifest.videos[manifest.videos["status"] == "ok"])
    print(f"split@{dataset}: {table['split'].value_counts().to_dict()} videos"
          + (f", {table['fold'].nunique()} folds" if "fold" in table else "")
          + (f"; groups merged for {len(copies)} file(s) present in several groups (see "
             "`uspipe summary`)" if copies else ""))


if __name__ == "__main__":
    run_stage(main)
