"""Stage decode@<dataset>: the files ``inventory@<dataset>`` listed -> per-video WebDataset
shards + Parquet manifests."""

import sys
from pathlib import Path

from pipeline.config import load_params
from pipeline.console import console, error_line, failures_table, run_stage
from pipeline.data.ingest import decode_sources
from pipeline.data.manifest import SOURCES_FILE, load_manifest, read_sources
from pipeline.data.splits import copies_across_groups


def main(dataset: str, out: Path = Path("data")) -> None:
    params = load_params()
    config, source = params.decode, params.dataset(dataset)
    sources = read_sources(out / dataset / SOURCES_FILE, source.videos_path)
    summary = decode_sources(sources, out / dataset, config)
    counts = ", ".join(f"{count} {status}" for status, count in sorted(summary.counts.items()))
    console.print(f"decode@{dataset}: {len(summary.results)} videos ({counts}); "
                  f"decoded {summary.decoded}, reused {summary.reused}, removed {summary.removed}")
    if summary.failures:
        console.print(failures_table(summary.as_frame()))
    videos = load_manifest(out / dataset).videos
    for copy in copies_across_groups(videos[videos["status"] == "ok"]):
        error_line(f"identical files in groups {', '.join(copy['groups'])}: "
                   f"{', '.join(copy['videos'])} (split@{dataset} keeps them on one side)",
                   label="warning:")
    ok = summary.counts.get("ok", 0)
    if ok == 0:
        sys.exit(f"decode@{dataset}: no video decoded")
    if config.strict and summary.failures:
        sys.exit(f"decode@{dataset}: {len(summary.failures)} video(s) failed "
                 "and decode.strict is set")


if __name__ == "__main__":
    run_stage(main)
