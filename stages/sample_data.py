"""Stage sample_data: write the embedded synthetic sample (pretrain + downstream datasets); the
pretraining set also gets the hospital-export inputs (DICOM cines, a frame folder, stills);
the lesions set is the breast-lesion phantom of the image tasks."""

from pathlib import Path

from pipeline.config import load_params
from pipeline.console import run_stage
from pipeline.data.phantom import write_phantom
from pipeline.data.synthetic import write_dataset
from pipeline.data.synthetic_exports import write_exports


def main() -> None:
    config = load_params().sample
    root = Path(config.output)
    for name, count, seed in (("pretrain", config.pretrain_videos, config.seed),
                              ("downstream", config.downstream_videos, config.seed + 1)):
        specs = write_dataset(root / name, count, seed, group_prefix=f"synthetic-{name}")
        exports = (write_exports(root / name, seed, f"synthetic-{name}")
                   if name == "pretrain" else [])
        print(f"sample_data: wrote {len(specs)} clips"
              + (f" and {len(exports)} exports (DICOM, frames, stills)" if exports else "")
              + f" to {root / name}")
    lesions = write_phantom(root / "lesions", config.lesion_images, config.seed)
    print(f"sample_data: wrote {len(lesions)} lesion images with masks to {root / 'lesions'}")


if __name__ == "__main__":
    run_stage(main)
