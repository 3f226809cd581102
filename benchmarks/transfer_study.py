"""The transfer study of issue 11: pretrain on COVID-BLUES, evaluate on POCUS convex videos of
other patients with frozen-feature probes (repeated grouped 5-fold CV) and last-block
fine-tuning, and compare every run with scratch and the prototype's recipe by paired
bootstrap over patients, and every recipe (its runs of several pretraining seeds) with random
init and the default recipe by a bootstrap over runs and patients.

Resumable: each finished run leaves ``<out>/<run>/summary.json`` (and its predictions) and is
skipped on a rerun; an interrupted pretraining resumes from its checkpoint. Decoded data and
checkpoints live in ``--work`` (outside the repository: the datasets' licences forbid copying).

    python benchmarks/transfer_study.py                  # every run below, in order
    python benchmarks/transfer_study.py proto scratch    # some runs
    python benchmarks/transfer_study.py uscl-s1@ft-lr0.001  # a fine-tuning variant of a run
    python benchmarks/transfer_study.py --finetune-repeats 3 scratch uscl-s0
                                   # fine-tuning on fold seeds 0-2 (finished runs: the rest)
    python benchmarks/transfer_study.py --report         # only rewrite <out>/report.md
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from pipeline.atomic import atomic_path, write_json, write_text
from pipeline.card import RunCard
from pipeline.config import DecodeConfig, FinetuneConfig, ProbeConfig, TrainConfig
from pipeline.data.ingest import ingest
from pipeline.data.manifest import Manifest, load_manifest
from pipeline.data.splits import split_table
from pipeline.evaluate.compare import compare, metric_values
from pipeline.evaluate.compare import units as unit_predictions
from pipeline.evaluate.evaluation import level_scores, selected
from pipeline.evaluate.finetune import cross_validate, select_videos
from pipeline.evaluate.probe import frame_features, probe_functions, repeated_probes
from pipeline.pretrain.engine import pretrain

SHARED = Path(os.environ.get("USPIPE_SHARED_DATA", Path(__file__).resolve().parents[2] /
                             "shared" / "data"))
CLASSES = ["covid", "pneumonia", "regular"]
SIZE = 112
FOLD_SEEDS = (0, 1, 2)  # repeated cross-validation for the probes
BASE = TrainConfig(image_size=SIZE, epochs=80, batch_size=32, workers=2)
PROTO = replace(BASE, preset="proto")
# The runs this study first called "proto" were built when a config filled its preset's knobs
# at construction, so ``replace(BASE, preset="proto")`` kept the code preset's: they paired
# frames by the paper's rule (the proto and paper presets') with code's CE branch, 256-d
# projection, jitter on every view and constant-then-cosine schedule. Kept, named for that.
PAPER_PAIRS = replace(BASE, preset="proto", supervised_weight=0.2, projection_dim=256,
                      jitter_p=1.0, lr_schedule="constant_then_cosine")
# name -> (train config, pretraining clips: "all" or the split's "train" part)
RUNS: dict[str, tuple[TrainConfig | None, str]] = {
    "scratch": (replace(BASE, method="scratch"), "all"),
    "proto": (PROTO, "all"),  # the prototype's recipe
    "code": (BASE, "train"),  # the pipeline's default recipe before this study
    "paper-pairs": (PAPER_PAIRS, "all"),
    # the ablation: one of the prototype's choices at a time turned to the code preset's
    "code-pairs": (replace(BASE, supervised_weight=0.0, projection_dim=128, jitter_p=0.8,
                           lr_schedule="cosine_per_step"), "all"),
    "proto+ce": (replace(PROTO, supervised_weight=0.2), "all"),
    "proto-projection-256": (replace(PROTO, projection_dim=256), "all"),
    "proto-jitter-always": (replace(PROTO, jitter_p=1.0), "all"),
    "proto-epoch-schedule": (replace(PROTO, lr_schedule="constant_then_cosine"), "all"),
    "proto-train-split": (PROTO, "train"),
    "proto-seed1": (replace(PROTO, seed=1), "all"),  # how far a pretraining seed alone moves it
}
ABLATION = ("code-pairs", "proto+ce", "proto-projection-256", "proto-jitter-always",
            "proto-epoch-schedule", "proto-train-split", "proto-seed1")
# runs on frames cropped to the scan area with everything outside it zeroed (issue 13)
SCAN_AREA = {"paper-pairs-scan-area": "crop_and_mask"}
RUNS["paper-pairs-scan-area"] = (PAPER_PAIRS, "all")
# the six-method study (issue 11 §3): 100 epochs, two pretraining seeds, every clip
STUDY_METHODS = ("uscl", "simclr", "hico", "meta_uscl", "supervised", "scratch")
STUDY_SEEDS = (0, 1)
STUDY = replace(BASE, epochs=100)
# SimCLR draws a pair per frame (124 batches an epoch against 11 for a pair per clip), so it
# runs the same number of optimiser steps instead: 9 x 124 = 1116 against 100 x 11 = 1100,
# with the same share of them (a tenth) at constant lr
SIMCLR_STUDY = replace(STUDY, epochs=9, constant_epochs=1)
RUNS.update({f"{method}-s{seed}": (replace(SIMCLR_STUDY if method == "simclr" else STUDY,
                                           method=method, seed=seed), "all")
             for seed in STUDY_SEEDS for method in STUDY_METHODS
             if (method, seed) != ("scratch", 0)})  # that one is "scratch" above
# a third pretraining seed for the default recipe, random init and the prototype's recipe: one
# seed moves the probes as far as any recipe change does (results.md)
RUNS.update({f"{method}-s2": (replace(STUDY, method=method, seed=2), "all")
             for method in ("uscl", "scratch")})
RUNS["proto-seed2"] = (replace(PROTO, seed=2), "all")
# does three times the pretraining widen the default's gain over random init?
RUNS["uscl-300ep-s0"] = (replace(STUDY, method="uscl", epochs=300, seed=0), "all")
# issue 11 §0: bf16 autocast + channels_last against fp32, same seeds (paired with uscl-s0)
RUNS["uscl-s0-fp32"] = (replace(STUDY, method="uscl", seed=0, amp=False), "all")
# the papers' resolution: pretraining, probes and fine-tuning on frames of short side 224
# (scratch-224px, scratch-224px-s1: the random initialisations of scratch and scratch-s1,
# evaluated at 224 px)
RUNS["scratch-224px"] = (replace(STUDY, method="scratch", image_size=224), "all")
RUNS["scratch-224px-s1"] = (replace(STUDY, method="scratch", image_size=224, seed=1), "all")
RUNS.update({f"uscl-224px-s{seed}": (replace(STUDY, method="uscl", image_size=224, seed=seed),
                                     "all") for seed in (0, 1)})
# runs that change one thing of others: the report compares them with (random init, the run
# they vary) instead of (scratch, proto); scratch-224px varies scratch, its only reference;
# scratch-224px-s1 varies scratch-s1 and is set beside the other initialisation at 224 px
COMPARED_WITH = {"uscl-300ep-s0": ("scratch", "uscl-s0"),
                 "uscl-s0-fp32": ("scratch", "uscl-s0"),
                 "scratch-224px": ("scratch", "scratch-224px"),
                 "scratch-224px-s1": ("scratch-s1", "scratch-224px"),
                 "uscl-224px-s0": ("scratch-224px", "uscl-s0"),
                 "uscl-224px-s1": ("scratch-224px-s1", "uscl-s1")}
# recipes over pretraining seeds: a recipe's runs differ only in the seed
RECIPES: dict[str, tuple[str, ...]] = {
    "random init": ("scratch", "scratch-s1", "scratch-s2"),
    "uscl, code preset (the default)": ("uscl-s0", "uscl-s1", "uscl-s2"),
    "the prototype's recipe": ("proto", "proto-seed1", "proto-seed2"),
    **{method: tuple(f"{method}-s{seed}" for seed in STUDY_SEEDS)
       for method in STUDY_METHODS if method not in ("uscl", "scratch")},
}
# the same comparison at the papers' resolution (each recipe against its own first and second)
RECIPES_224PX: dict[str, tuple[str, ...]] = {
    "random init, 224 px": ("scratch-224px", "scratch-224px-s1"),
    "uscl, code preset (the default), 224 px": ("uscl-224px-s0", "uscl-224px-s1"),
}
FINETUNED = ("scratch", "proto", "code", "paper-pairs", "paper-pairs-scan-area", *ABLATION,
             "proto-seed2", "scratch-224px",
             *(name for name in RUNS if name[-3:-1] == "-s"))
FINETUNE = FinetuneConfig(epochs=15, image_size=SIZE, workers=2)
# fine-tuning variants of a pretrained run: why last-block fine-tuning can lose to scratch
VARIANTS: dict[str, tuple[str, FinetuneConfig]] = {
    "uscl-s1@ft-lr0.001": ("uscl-s1", replace(FINETUNE, lr=1e-3)),
    "uscl-s1@ft-keep-bn": ("uscl-s1", replace(FINETUNE, frozen_bn="keep")),
    "scratch@ft-lr0.001": ("scratch", replace(FINETUNE, lr=1e-3)),
    "uscl-s0@ft-fp32": ("uscl-s0", replace(FINETUNE, amp=False)),
}


def prepared(work: Path, scan_area: str = "off", size: int = SIZE) -> tuple[Path, Path]:
    """COVID-BLUES (at most 30 frames a clip) and POCUS decoded at 3 fps, short side ``size``
    (another size or a ``decode.scan_area``: into their own folders)."""
    suffix = ("" if scan_area == "off" else f"-{scan_area}") + \
        ("" if size == SIZE else f"-{size}px")
    corpus, downstream = work / f"covid-blues{suffix}", work / f"pocus{suffix}"
    for source, out, config in (
            (SHARED / "covid-blues", corpus,
             DecodeConfig(max_frames=30, short_side=size, scan_area=scan_area)),
            (SHARED / "pocus", downstream, DecodeConfig(short_side=size, scan_area=scan_area))):
        if not (out / "videos.parquet").is_file():
            ingest(source / "videos", source / "labels.csv", out, config)
    return corpus, downstream


def prepared_for(name: str, work: Path) -> tuple[Path, Path]:
    """:func:`prepared` at a run's pretraining size and scan-area setting."""
    return prepared(work, SCAN_AREA.get(name, "off"), RUNS[name][0].image_size)


def downstream_of(name: str, work: Path, finetune: FinetuneConfig = FINETUNE
                  ) -> tuple[Path, FinetuneConfig]:
    """A run's decoded POCUS folder and a fine-tuning config at its pretraining size."""
    return prepared_for(name, work)[1], replace(finetune, image_size=RUNS[name][0].image_size)


def run_variant(name: str, work: Path, out: Path, repeats: int = 1) -> None:
    """Fine-tune a finished run's backbone with another fine-tuning config."""
    base, finetune = VARIANTS[name]
    folder = out / name
    summary = folder / "summary.json"
    if finetune_repeats(folder) >= repeats and summary.is_file():
        print(f"{name}: done already")
        return
    if not (out / base / "summary.json").is_file():
        run(base, work, out)
    card, backbone, _ = pretrained(base, work)
    downstream_dir, finetune = downstream_of(base, work, finetune)
    folder.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(summary.read_text())["finetune_s"] if summary.is_file() else 0
    metrics, seconds = finetuned(load_manifest(downstream_dir), card, backbone, finetune, folder,
                                 repeats)
    write_json(summary, {
        "run": name, "base": base, "finetune": asdict(finetune), "clips": "-",
        "train_videos": card.train_videos, "pretrain_s": 0, "finetune_s": earlier + seconds,
        "final_losses": {}, "metrics": {"finetune": metrics}})


def _finetune_files(folder: Path, repeat: int) -> tuple[Path, Path]:
    """Predictions and curves of one fine-tuning repeat (fold seed): ``finetune.parquet`` for
    fold seed 0 (the study's first layout), ``finetune-r<k>.parquet`` for the others."""
    suffix = "" if repeat == 0 else f"-r{repeat}"
    return folder / f"finetune{suffix}.parquet", folder / f"finetune_curves{suffix}.csv"


def finetune_repeats(folder: Path) -> int:
    """How many fold seeds (0, 1, ...) a run has been fine-tuned on."""
    repeats = 0
    while _finetune_files(folder, repeats)[0].is_file():
        repeats += 1
    return repeats


def finetune_predictions(folder: Path) -> pd.DataFrame | None:
    """The last epoch's test predictions of every fine-tuning repeat, marked ``repeat``."""
    tables = [selected(pd.read_parquet(predictions), pd.read_csv(curves), "last_epoch")
              .assign(repeat=repeat)
              for repeat in range(finetune_repeats(folder))
              for predictions, curves in [_finetune_files(folder, repeat)]]
    return pd.concat(tables, ignore_index=True) if tables else None


def finetuned(downstream: Manifest, card: RunCard, backbone: Path, finetune: FinetuneConfig,
              folder: Path, repeats: int = 1) -> tuple[dict[str, object], int]:
    """Fine-tune ``backbone`` on the five folds of fold seeds 0 .. ``repeats`` - 1 (each one
    written as it finishes and not rerun); return the last epoch's metrics over every repeat
    and the seconds the new repeats took."""
    started = time.perf_counter()
    for repeat in range(repeats):
        predictions, curves = _finetune_files(folder, repeat)
        if predictions.is_file():
            continue
        result = cross_validate(downstream, split_table(downstream.videos, 0.2, repeat, folds=5),
                                finetune, card.backbone, backbone, card.normalisation)
        write_text(curves, result.curves.to_csv(index=False))
        with atomic_path(predictions) as temporary:  # last: it marks the repeat done
            result.predictions.to_parquet(temporary, index=False)
    metrics = level_scores(finetune_predictions(folder), CLASSES, "regular")
    return metrics, round(time.perf_counter() - started)


def pretrained(name: str, work: Path) -> tuple[RunCard, Path, float | None]:
    """A run's backbone and card in ``work/runs/<name>``, pretrained there first (resuming
    from its checkpoint) unless they are there already from the same config; with the
    seconds pretraining took (None: pretrained by an earlier command)."""
    config, clips = RUNS[name]
    folder = work / "runs" / name
    if (folder / "card.json").is_file() and (folder / "backbone.pt").is_file():
        card = RunCard.load(folder / "card.json")
        if card.params == asdict(config.resolved()):
            return card, folder / "backbone.pt", None
    corpus = load_manifest(prepared_for(name, work)[0])
    split = split_table(corpus.videos, 0.2, 0)
    ok = corpus.videos[corpus.videos["status"] == "ok"]
    train = ok if clips == "all" else ok[ok["video_id"].isin(
        split.loc[split["split"] == "train", "video_id"])]
    held_out = sorted(set(ok["video_id"]) - set(train["video_id"]))
    started = time.perf_counter()
    card, _ = pretrain(corpus, train.sort_values("video_id"), config, folder,
                       held_out=held_out, log_metrics=False)
    return card, folder / "backbone.pt", time.perf_counter() - started


def run(name: str, work: Path, out: Path, repeats: int = 1) -> None:
    config, clips = RUNS[name]
    folder = out / name
    if (folder / "summary.json").is_file():
        if name in FINETUNED and finetune_repeats(folder) < repeats:
            more_finetuning(name, work, out, repeats)
        else:
            print(f"{name}: done already")
        return
    card, backbone, pretrain_s = pretrained(name, work)
    downstream_dir, finetune = downstream_of(name, work)
    folder.mkdir(parents=True, exist_ok=True)
    card.save(folder / "card.json")

    downstream = load_manifest(downstream_dir)
    started = time.perf_counter()
    assignments = [split_table(downstream.videos, 0.2, seed, folds=5) for seed in FOLD_SEEDS]
    videos = select_videos(downstream.videos, assignments[0], finetune)
    features, frames = frame_features(downstream, videos["video_id"].tolist(), card.backbone,
                                      backbone, card.normalisation, finetune.image_size)
    probe = repeated_probes(features, frames, downstream.videos, assignments, finetune,
                            probe_functions(ProbeConfig()))
    probe_s = time.perf_counter() - started
    with atomic_path(folder / "probe.parquet") as temporary:
        probe.to_parquet(temporary, index=False)
    summary = {"run": name, "clips": clips, "train_videos": card.train_videos,
               "config": asdict(config.resolved()),
               "pretrain_s": None if pretrain_s is None else round(pretrain_s),
               "probe_s": round(probe_s), "final_losses": card.final_losses, "metrics": {}}
    for protocol, table in probe.groupby("protocol"):
        summary["metrics"][protocol] = level_scores(table, CLASSES, "regular")
    if name in FINETUNED and repeats:
        summary["metrics"]["finetune"], summary["finetune_s"] = finetuned(
            downstream, card, backbone, finetune, folder, repeats)
    write_json(folder / "summary.json", summary)
    accuracy = {protocol: round(metrics["video"]["pooled"]["accuracy"], 3)
                for protocol, metrics in summary["metrics"].items()}
    print(f"{name}: video-level accuracy {accuracy}")


def more_finetuning(name: str, work: Path, out: Path, repeats: int) -> None:
    """Fine-tune a finished run on more fold seeds; its summary's fine-tuning metrics then
    cover every repeat."""
    folder = out / name
    summary = json.loads((folder / "summary.json").read_text())
    downstream_dir, finetune = downstream_of(name, work)
    card, backbone, _ = pretrained(name, work)  # pretrained again if ``work`` lost it
    metrics, seconds = finetuned(load_manifest(downstream_dir), card, backbone, finetune, folder,
                                 repeats)
    summary["metrics"]["finetune"] = metrics
    summary["finetune_s"] = summary.get("finetune_s", 0) + seconds
    write_json(folder / "summary.json", summary)
    print(f"{name}: fine-tuned on {repeats} fold seeds")


def unit_names(work: Path) -> dict[str, str]:
    """Video id -> source path over every decoded POCUS folder in ``work``: runs decoded
    before and after the 16-digit ids (issue 12) name one video differently, and are paired
    by its path. An id from before ends in the first 8 of the 16 hex digits, so it is named
    from a folder decoded after as well."""
    names: dict[str, str] = {}
    for manifest in sorted(work.glob("pocus*/videos.parquet")):
        videos = pd.read_parquet(manifest, columns=["video_id", "source_path"])
        names.update(zip(videos["video_id"], videos["source_path"], strict=True))
        names.update(zip(videos["video_id"].str[:-8], videos["source_path"], strict=True))
    return names


def _predictions(out: Path, name: str, protocol: str, names: dict[str, str]
                 ) -> pd.DataFrame | None:
    folder = out / name
    if protocol == "finetune":
        table = finetune_predictions(folder)
        if table is None:
            return None
    elif (folder / "probe.parquet").is_file():
        table = pd.read_parquet(folder / "probe.parquet")
        table = table[table["protocol"] == protocol]
    else:
        return None
    return table.assign(video_id=table["video_id"].map(lambda vid: names.get(vid, vid)))


def report(out: Path, work: Path) -> str:
    """``report.md``: each run's numbers, and its paired differences (:func:`references`)."""
    units = unit_names(work)
    names = [name for name in [*RUNS, *VARIANTS] if (out / name / "summary.json").is_file()]
    summaries = {name: json.loads((out / name / "summary.json").read_text()) for name in names}
    lines = ["# Transfer study: COVID-BLUES -> POCUS convex (issue 11)", "",
             "Generated by `python benchmarks/transfer_study.py --report`. Pooled accuracy, "
             "macro F1 and macro AUC; probes over 3 fold assignments (fold seeds) x 5 "
             "grouped folds, fine-tuning over the fold seeds in its column x 5. Differences: "
             "paired bootstrap over patients (2000 resamples, 95 % percentile CI) on the fold "
             "seeds both runs have (named when fewer than 3); **bold** where the CI excludes "
             "0.", ""]
    lines += recipe_tables(out, units, RECIPES)
    lines += recipe_tables(out, units, RECIPES_224PX, " at 224 px")
    for protocol in ("linear", "knn", "finetune"):
        for level in ("video", "frame"):
            rows = [n for n in names if protocol in summaries[n]["metrics"]]
            if not rows:
                continue
            lines += [f"## {protocol}, {level} level", "",
                      "| run | fold seeds | accuracy | macro F1 | macro AUC | "
                      "fold acc. mean ± std | Δ acc. vs scratch [95 % CI] | "
                      "Δ acc. vs proto, SimCLR or the run varied [95 % CI] |",
                      "|---|---|---|---|---|---|---|---|"]
            for name in rows:
                metrics = summaries[name]["metrics"][protocol][level]
                pooled, per_run = metrics["pooled"], metrics["per_run"]["accuracy"]
                seeds = finetune_repeats(out / name) if protocol == "finetune" \
                    else len(FOLD_SEEDS)
                cells = [name, str(seeds), f"{pooled['accuracy']:.3f}", f"{pooled['macro_f1']:.3f}",
                         f"{pooled['macro_auc']:.3f}",
                         f"{per_run['mean']:.3f} ± {per_run['std']:.3f}"]
                cells += [_difference(out, name, reference, protocol, level, units)
                          for reference in references(name)]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["## Runs", "", "| run | pretraining clips | train videos | pretrain s | "
              "final loss |", "|---|---|---|---|---|"]
    for name in names:
        summary = summaries[name]
        lines.append(f"| {name} | {summary['clips']} | {summary['train_videos']} | "
                     f"{summary['pretrain_s']} | "
                     f"{summary['final_losses'].get('total', float('nan')):.3f} |")
    text = "\n".join(lines) + "\n"
    write_text(out / "report.md", text)
    return text


def references(name: str) -> tuple[str, str]:
    """What a run is compared with: scratch and the prototype's recipe; a study run with the
    scratch and SimCLR runs of its own pretraining seed; a fine-tuning variant with scratch
    and the run it varies; a run of ``COMPARED_WITH`` as it says."""
    if name in VARIANTS:
        return "scratch", VARIANTS[name][0]
    if name in COMPARED_WITH:
        return COMPARED_WITH[name]
    if name[-3:-1] == "-s":
        seed = name[-1]
        return ("scratch" if seed == "0" else f"scratch-s{seed}"), f"simclr-s{seed}"
    return "scratch", "proto"


def recipe_tables(out: Path, units: dict[str, str], recipes: dict[str, tuple[str, ...]],
                  title: str = "") -> list[str]:
    """Report lines: each recipe's mean accuracy over its finished runs (pretraining seeds)
    and its difference to the first recipe (random init) and the second (the default), over
    runs and patients (the two-level bootstrap of ``uspipe compare --also-a``). Fine-tuning
    on the fold seeds every run shown has."""
    present = {recipe: [name for name in names if (out / name / "summary.json").is_file()]
               for recipe, names in recipes.items()}
    present = {recipe: names for recipe, names in present.items() if names}
    if not present:
        return []
    reference, default = list(recipes)[:2]
    lines = [f"## Recipes over pretraining seeds{title}", "",
             "A recipe's runs differ only in the pretraining seed. Accuracy: the mean over its "
             "runs ± their standard deviation (the seed-to-seed spread). Differences: "
             "recipe means, 95 % interval of a bootstrap that resamples the runs of each "
             "side as well as the patients (coarse with two or three runs a side).", ""]
    for protocol in ("linear", "knn", "finetune"):
        tables = {}
        for recipe, names in present.items():
            found = [table for table in (_predictions(out, name, protocol, units)
                                         for name in names) if table is not None]
            if found:
                tables[recipe] = found
        if reference not in tables:
            continue
        common = set.intersection(*(set(t["repeat"]) for found in tables.values()
                                    for t in found))
        tables = {recipe: [t[t["repeat"].isin(common)] for t in found]
                  for recipe, found in tables.items()}
        for level in ("video", "frame"):
            lines += [f"### {protocol}, {level} level ({len(common)} fold "
                      f"seed{'s' * (len(common) > 1)})", "",
                      "| recipe | pretraining epochs | runs | accuracy (mean ± std over runs) "
                      f"| Δ acc. vs {reference} [95 % CI] | Δ acc. vs {default} [95 % CI] |",
                      "|---|---|---|---|---|---|"]
            accuracies = {recipe: [_accuracy(table, level) for table in found]
                          for recipe, found in tables.items()}
            for recipe, found in tables.items():
                values = accuracies[recipe]
                epochs = RUNS[present[recipe][0]][0].epochs if recipe != reference else "-"
                cells = [recipe, str(epochs), str(len(found)),
                         f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
                         if len(found) > 1 else f"{values[0]:.3f}"]
                cells += ["-" if other == recipe or other not in tables else
                          _interval(found, tables[other], level) for other in (reference, default)]
                lines.append("| " + " | ".join(cells) + " |")
            lines += ["", _detectable(tables, accuracies, reference, level), ""]
    return lines


Z_95 = NormalDist().inv_cdf(0.975)  # a 95 % interval's half-width in SDs
POWER_Z = Z_95 + NormalDist().inv_cdf(0.8)  # a two-sided 5 % test with 80 % power


def _detectable(tables: dict[str, list[pd.DataFrame]], accuracies: dict[str, list[float]],
                reference: str, level: str) -> str:
    """The smallest recipe difference this evaluation detects, with n pretraining seeds a
    side: ``POWER_Z * sqrt(s_p^2 + 2 s_seed^2 / n)``. ``s_p``: the patients' SD of a paired
    difference between two fixed backbones (a 95 % bootstrap interval's width / 3.92, root
    mean square over every run against random init's first); ``s_seed``: the SD between the seeds
    of one recipe, pooled over the recipes with several. ``s_p`` also holds the part of the
    patients' effect that is particular to the two backbones, which averages out over seeds,
    so the bound for unlimited seeds is an upper one."""
    base = tables[reference][0]
    widths = [difference.high - difference.low
              for found in tables.values() for table in found if table is not base
              for difference in compare(table, base, CLASSES, level, 500,
                                        metrics=("accuracy",))]
    spreads = [values for values in accuracies.values() if len(values) > 1]
    if not widths or not spreads:
        return "Detectable difference: needs runs of several seeds and recipes."
    s_p = float(np.sqrt(np.mean(np.square(widths)))) / (2 * Z_95)
    s_seed = float(np.sqrt(sum((len(v) - 1) * np.var(v, ddof=1) for v in spreads)
                           / sum(len(v) - 1 for v in spreads)))
    detectable = {n: POWER_Z * np.sqrt(s_p ** 2 + 2 * s_seed ** 2 / n) for n in (1, 3, 10)}
    return ("Smallest difference between two recipes detected with 80 % power (5 %, "
            "two-sided): " + ", ".join(f"{value:.3f} with {n} seed{'s' * (n > 1)} a side"
                                       for n, value in detectable.items())
            + f", at most {POWER_Z * s_p:.3f} with unlimited seeds (patients' SD of a paired "
            f"difference between two backbones {s_p:.3f}, part of which averages out over "
            f"seeds; seeds' SD {s_seed:.3f}, pooled over {len(spreads)} "
            f"recipe{'s' * (len(spreads) > 1)}).")


def _accuracy(table: pd.DataFrame, level: str) -> float:
    unit = unit_predictions(table, CLASSES, level)
    return metric_values(unit["label"].to_numpy(), unit[[f"p_{c}" for c in CLASSES]].to_numpy(),
                         ("accuracy",))["accuracy"]


def _interval(a: pd.DataFrame | list[pd.DataFrame], b: pd.DataFrame | list[pd.DataFrame],
              level: str) -> str:
    """A minus B's accuracy with its paired bootstrap CI (a side: one run or a recipe's)."""
    (accuracy,) = compare(a, b, CLASSES, level, metrics=("accuracy",))
    text = f"{accuracy.difference:+.3f} [{accuracy.low:+.3f}, {accuracy.high:+.3f}]"
    return f"**{text}**" if accuracy.supported else text


def _difference(out: Path, name: str, reference: str, protocol: str, level: str,
                units: dict[str, str]) -> str:
    if name == reference:
        return "-"
    a, b = (_predictions(out, run, protocol, units) for run in (name, reference))
    if a is None or b is None:
        return "n/a"
    common = set(a["repeat"]) & set(b["repeat"])  # runs fine-tuned on more fold seeds
    text = _interval(a[a["repeat"].isin(common)], b[b["repeat"].isin(common)], level)
    return text if len(common) >= len(FOLD_SEEDS) or protocol != "finetune" \
        else f"{text} ({len(common)} fold seed{'s' * (len(common) > 1)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*",
                        help=f"some of: {', '.join([*RUNS, *VARIANTS])}")
    parser.add_argument("--work", type=Path,
                        default=Path(__file__).resolve().parents[2] / "uspipe-study")
    parser.add_argument("--out", type=Path, default=Path("results/study"))
    parser.add_argument("--report", action="store_true", help="only rewrite report.md")
    parser.add_argument("--finetune-repeats", type=int, default=1, metavar="N",
                        help="fine-tune on fold seeds 0 .. N-1 (finished runs get the missing "
                             "ones; 0: probes only)")
    arguments = parser.parse_args()
    known = [*RUNS, *VARIANTS]
    unknown = sorted(set(arguments.runs) - set(known))
    if unknown:
        parser.error(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if not arguments.report:
        for name in arguments.runs or known:
            (run_variant if name in VARIANTS else run)(name, arguments.work, arguments.out,
                                                       arguments.finetune_repeats)
            report(arguments.out, arguments.work)
    print(report(arguments.out, arguments.work))


if __name__ == "__main__":
    main()
