"""Stage inventory@<dataset>: list and hash a dataset's files -> ``sources.parquet``.

The dataset root is read here and only here, by the safe listing of
:mod:`pipeline.data.sources` (no pipe is ever opened, links stay inside the root); DVC tracks
``sources.parquet`` (paths, content hashes, labels) instead of hashing the root itself, which
hangs on a named pipe and fails on a dangling link. The stage is ``always_changed``: it runs on
every ``dvc repro``, re-reading only files whose size, mtime or inode changed, and the stages
after it run only if the listing did change.
"""

from collections import Counter
from pathlib import Path

from pipeline.config import load_params
from pipeline.console import console, run_stage
from pipeline.data.ingest import inventory
from pipeline.data.manifest import SOURCES_FILE, write_sources


def main(dataset: str, out: Path = Path("data")) -> None:
    source = load_params().dataset(dataset)
    folder = out / dataset
    sources = inventory(source.videos_path, source.labels_path, folder, source.frame_folders,
                        source.group_salt, source.class_folders)
    write_sources(sources, folder / SOURCES_FILE)
    counts = Counter(entry.status for entry in sources)
    console.print(f"inventory@{dataset}: {len(sources)} entries ("
                  + ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
                  + "); entries that are not ok are listed by decode@" + dataset)


if __name__ == "__main__":
    run_stage(main)
