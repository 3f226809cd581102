"""Stage sample_data: write the embedded synthetic sample (pretrain + downstream datasets)."""

from pathlib import Path

from pipeline.config import load_params
from pipeline.console import run_stage
from pipeline.data.synthetic import write_dataset


def main() -> None:
    config = load_params().sample
    root = Path(config.output)
    for name, count, seed in (("pretrain", config.pretrain_videos, config.seed),
                              ("downstream", config.downstream_videos, config.seed + 1)):
        specs = write_dataset(root / name, count, seed, group_prefix=f"synthetic-{name}")
        print(f"sample_data: wrote {len(specs)} clips to {root / name}")


if __name__ == "__main__":
    run_stage(main)
