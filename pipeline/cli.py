"""``uspipe``: inspect decoded datasets (summary, one video, contact sheet, verify, errors) and
compare experiments (report)."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.atomic import write_text
from pipeline.card import RunCard
from pipeline.console import console, counts_table, error_line, failures_table
from pipeline.data.manifest import Manifest, ManifestError, load_manifest, publish
from pipeline.evaluate.report import Run, comparison_tables, html_page, markdown
from pipeline.inspection import (
    contact_sheet,
    dataset_summary,
    save_image,
    verify,
    video_details,
)

app = typer.Typer(help="Inspect uspipe datasets (decoded shards + Parquet manifests) and "
                       "compare experiments.",
                  no_args_is_help=True, add_completion=False)

DatasetOption = Annotated[str, typer.Option(
    "--dataset", "-d",
    help="Dataset name (resolved under --data-root) or a folder holding videos.parquet.")]
DataRootOption = Annotated[Path, typer.Option(help="Where the pipeline writes datasets.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _open(dataset: str, data_root: Path) -> Manifest:
    folder = data_root / dataset if (data_root / dataset).is_dir() else Path(dataset)
    try:
        return load_manifest(folder)
    except (FileNotFoundError, ManifestError) as error:
        error_line(str(error))
        raise typer.Exit(2) from error


def _video_or_exit(manifest: Manifest, video_id: str) -> None:
    if video_id in set(manifest.videos["video_id"]):
        return
    close = difflib.get_close_matches(video_id, manifest.videos["video_id"].tolist(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    error_line(f"unknown video id {video_id!r} in {manifest.root}{hint}")
    raise typer.Exit(2)


def _print_json(payload: object) -> None:
    print(json.dumps(payload, indent=2, default=str))


@app.command()
def summary(dataset: DatasetOption = "pretrain", data_root: DataRootOption = Path("data"),
            as_json: JsonOption = False) -> None:
    """Counts by label/probe/status, frames, fps and duration distributions."""
    info = dataset_summary(_open(dataset, data_root))
    if as_json:
        _print_json(info)
        return
    console.print(f"{info['dataset']}: {info['videos']} videos "
                  f"({info['ok']} ok, {info['failed']} failed), {info['frames']} frames, "
                  f"{info['groups']} groups")
    for key in ("by_status", "by_label", "by_probe", "by_container"):
        if info[key]:
            console.print(counts_table(key.removeprefix("by_"), info[key]))
    stats = Table(title="distributions (ok videos)")
    for column in ("", "min", "median", "mean", "max"):
        stats.add_column(column, justify="right")
    for key in ("fps", "duration_s", "kept_frames_per_video"):
        values = info[key]
        stats.add_row(key, *("-" if values[s] is None else f"{values[s]:.2f}"
                             for s in ("min", "median", "mean", "max")))
    console.print(stats)
    for copy in info["copies_across_groups"]:
        error_line(f"identical files in groups {', '.join(copy['groups'])}: "
                   f"{', '.join(copy['videos'])} (the split keeps them on one side)",
                   label="warning:")


@app.command()
def video(video_id: str, dataset: DatasetOption = "pretrain",
          data_root: DataRootOption = Path("data"), as_json: JsonOption = False) -> None:
    """Metadata of one video and the timestamps of its kept frames."""
    manifest = _open(dataset, data_root)
    _video_or_exit(manifest, video_id)
    details = video_details(manifest, video_id)
    if as_json:
        _print_json(details)
        return
    table = Table(title=video_id, show_header=False)
    for key, value in details.items():
        if key not in ("kept_timestamps_s", "kept_frame_indices"):
            table.add_row(key, "" if value is None else str(value))
    console.print(table)
    times = ", ".join(f"{t:.3f}" for t in details["kept_timestamps_s"])
    console.print(f"kept timestamps (s): {times or '(none)'}")


@app.command()
def sheet(video_id: str,
          output: Annotated[Path, typer.Option("--output", "-o", help="PNG to write.")],
          dataset: DatasetOption = "pretrain", data_root: DataRootOption = Path("data"),
          columns: int = 6, width: int = 200) -> None:
    """Contact sheet (PNG) of a video's kept frames."""
    manifest = _open(dataset, data_root)
    _video_or_exit(manifest, video_id)
    try:
        image = contact_sheet(manifest, video_id, columns, width)
    except (ValueError, OSError) as error:  # no kept frames; shard missing or unreadable
        error_line(str(error))
        raise typer.Exit(2) from error
    save_image(image, output)
    console.print(f"wrote {output} ({image.width}x{image.height})")


@app.command(name="verify")
def verify_command(dataset: DatasetOption = "pretrain", data_root: DataRootOption = Path("data"),
                   as_json: JsonOption = False) -> None:
    """Check the dataset end to end: manifests against checksums.json and for consistency,
    every byte of every shard against them; exit 1 on any problem (2: a manifest unusable)."""
    checked, problems = verify(_open(dataset, data_root))
    if as_json:
        _print_json({"checked": checked, "mismatches": [p.__dict__ for p in problems]})
    else:
        for problem in problems:
            error_line(f"{problem.video_id} {problem.member}: {problem.problem}",
                       label="problem:")
        console.print(f"verified {checked} frames: "
                      + ("all match" if not problems else f"{len(problems)} problem(s)"),
                      style="red" if problems else "green")
    if problems:
        raise typer.Exit(1)


@app.command()
def errors(dataset: DatasetOption = "pretrain", data_root: DataRootOption = Path("data"),
           as_json: JsonOption = False) -> None:
    """Videos that failed to decode, and why."""
    videos = _open(dataset, data_root).videos
    failed = videos[videos["status"] != "ok"]
    if as_json:
        _print_json(failed[["video_id", "source_path", "status", "error"]].to_dict("records"))
    elif failed.empty:
        console.print("no failed videos")
    else:
        console.print(failures_table(videos))


@app.command()
def report(runs: Annotated[list[Path], typer.Argument(
               help="Folders of evaluate outputs (metrics.json, card.json, figures/), one "
                    "per experiment, e.g. results/ copied per method.")],
           output: Annotated[Path, typer.Option(
               "--output", "-o", help="Report path without suffix: writes .md and .html.")]
           = Path("report"),
           title: str = "Method comparison") -> None:
    """One comparison table across experiments (Markdown + HTML with figures embedded)."""
    try:
        loaded = [Run.load(folder) for folder in runs]
        comparisons = comparison_tables(loaded)
        pages = (markdown(loaded, title, output.parent, comparisons),
                 html_page(loaded, title, comparisons))
    except (FileNotFoundError, KeyError, ValueError) as error:
        error_line(str(error))
        raise typer.Exit(2) from error
    write_text(output.with_suffix(".md"), pages[0])
    write_text(output.with_suffix(".html"), pages[1])
    console.print(f"wrote {output.with_suffix('.md')} and {output.with_suffix('.html')} "
                  f"({len(loaded)} runs)")


@app.command(name="compare")
def compare_command(
        run_a: Annotated[Path, typer.Argument(help="Output folder of run A (finetune or probe).")],
        run_b: Annotated[Path, typer.Argument(help="Output folder of run B, same folds.")],
        protocol: Annotated[str, typer.Option(help="finetune | linear | knn")] = "finetune",
        level: Annotated[str, typer.Option(help="video | frame")] = "video",
        also_a: Annotated[list[Path] | None, typer.Option(
            "--also-a", help="Another run of A's recipe (another pretraining seed; "
                             "repeatable): A is then the mean of its runs and the CI "
                             "resamples runs as well as patients.")] = None,
        also_b: Annotated[list[Path] | None, typer.Option(
            "--also-b", help="Another run of B's recipe (repeatable).")] = None,
        resamples: int = 2000, seed: int = 0, as_json: JsonOption = False) -> None:
    """A minus B: accuracy, macro F1 and AUC with a paired bootstrap 95 % CI over patients
    (and over runs, where a side has several)."""
    from pipeline.evaluate.compare import compare, load_predictions

    sides = [[run_a, *(also_a or [])], [run_b, *(also_b or [])]]
    try:
        loaded = [[load_predictions(run, protocol) for run in side] for side in sides]
        classes = loaded[0][0][1]
        for side, found in zip(sides, loaded, strict=True):
            for run, (_, other) in zip(side, found, strict=True):
                if other != classes:
                    raise ValueError(f"{run}: classes {other}, not {classes}")
        a, b = ([table for table, _ in side] for side in loaded)
        differences = compare(a, b, classes, level, resamples, seed)
    except (FileNotFoundError, ValueError) as error:
        error_line(str(error))
        raise typer.Exit(2) from error
    if as_json:
        _print_json([{**vars(d), "supported": d.supported} for d in differences])
        return
    over = f"{a[0]['group'].nunique()} groups" + "".join(
        f", {len(side)} runs of {side[0]}" for side in sides if len(side) > 1)
    table = Table(title=f"{run_a} - {run_b} ({protocol}, {level} level, 95 % CI over {over})")
    for column in ("metric", "A", "B", "A - B", "95 % CI", "supported"):
        table.add_column(column)
    for d in differences:
        table.add_row(d.metric, f"{d.a:.3f}", f"{d.b:.3f}", f"{d.difference:+.3f}",
                      f"[{d.low:+.3f}, {d.high:+.3f}]", "yes" if d.supported else "no")
    console.print(table)


@app.command(name="export")
def export_command(
        run: Annotated[Path, typer.Argument(help="A pretraining run's folder (card.json, "
                                                 "backbone.pt), e.g. models/pretrain.")],
        output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write.")],
        results: Annotated[list[Path] | None, typer.Option(
            "--results", help="Evaluate or probe output folders whose metrics go into the "
                              "model card (repeatable).")] = None) -> None:
    """The backbone as model.safetensors + config.json + a model card (README.md), loadable by
    torchvision and timm."""
    from pipeline.export import export_backbone

    try:
        written = export_backbone(run, output, results or [])
    except (FileNotFoundError, ValueError) as error:
        error_line(str(error))
        raise typer.Exit(2) from error
    console.print("wrote " + ", ".join(str(path) for path in written))


@app.command(name="publish")
def publish_command(
        folder: Annotated[Path, typer.Argument(help="A decoded dataset folder, e.g. "
                                                    "data/pretrain.")],
        url: Annotated[str, typer.Argument(help="Where to, e.g. s3://bucket/datasets/pretrain "
                                                "(credentials from the AWS variables).")]
) -> None:
    """Copy a decoded dataset to object storage for training elsewhere (--data URL): shards
    first, checksums.json last; shards already there are skipped."""
    try:
        uploaded = publish(folder, url)
    except (FileNotFoundError, ManifestError) as error:
        error_line(str(error))
        raise typer.Exit(2) from error
    console.print(f"published {folder} to {url}: {len(uploaded)} file(s) uploaded")


@app.command(name="pair-weights")
def pair_weights(output: Annotated[Path, typer.Option("--output", "-o",
                                                      help="Folder for PNGs and CSVs.")],
                 dataset: DatasetOption = "pretrain", data_root: DataRootOption = Path("data"),
                 model: Annotated[Path, typer.Option(
                     help="The pretraining run's folder (card.json, checkpoint.pt).")]
                 = Path("models/pretrain"),
                 by: Annotated[str, typer.Option(help="videos.parquet column to group by.")]
                 = "label",
                 clip: Annotated[str | None, typer.Option(
                     help="Video id for the weight-vs-similarity plot; default: the "
                          "longest clip.")] = None,
                 pairs: int = 4) -> None:
    """A meta-learned CMW-Net's pair weights: per group (Meta-USCL Fig. 6) and against frame
    similarity in one clip (Fig. 5)."""
    from pipeline.evaluate.pair_weights import (
        clip_weights,
        load_weighting,
        video_pair_weights,
        weight_vs_similarity_figure,
        weights_by_group_figure,
    )

    manifest = _open(dataset, data_root)
    videos = manifest.videos[manifest.videos["status"] == "ok"]
    if by not in videos:
        error_line(f"no column {by!r} in {dataset}'s videos.parquet")
        raise typer.Exit(2)
    try:
        card = RunCard.load(model / "card.json")
        method = load_weighting(card, model / "checkpoint.pt")
    except (FileNotFoundError, ValueError) as error:
        error_line(str(error))
        raise typer.Exit(2) from error
    weights = video_pair_weights(method, manifest, videos, pairs)
    clip = clip or videos.sort_values("kept_frames")["video_id"].iloc[-1]
    similarity = clip_weights(method, manifest, clip)
    title = card.title
    write_text(output / "pair_weights.csv", weights.to_csv(index=False))
    write_text(output / "clip_weights.csv", similarity.to_csv(index=False))
    weights_by_group_figure(weights, videos.set_index("video_id")[by], output /
                            f"pair_weights_by_{by}.png", title)
    weight_vs_similarity_figure(similarity, output / "weight_vs_similarity.png",
                                f"{title}: {clip}")
    console.print(f"{len(weights)} pairs of {len(videos)} videos, mean weight "
                  f"{weights['weight'].mean():.3f}; wrote {output}")


if __name__ == "__main__":
    app()
