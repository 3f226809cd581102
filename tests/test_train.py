"""The pretraining engine: export, schedule, labels, and a killed run that resumes exactly."""

import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace

import pandas as pd
import pytest
import torch

from pipeline.card import RunCard
from pipeline.config import TrainConfig
from pipeline.data.manifest import load_manifest
from pipeline.pretrain.engine import (
    BACKBONE,
    CARD,
    CHECKPOINT,
    checkpoint_history,
    label_indices,
    pretrain,
)
from pipeline.pretrain.methods import build_method
from pipeline.pretrain.schedules import (
    constant_then_cosine,
    cosine_per_step,
    warmup_then_cosine,
)
from pipeline.tv_compat import torchvision

TINY = TrainConfig(epochs=3, image_size=32, batch_size=4, workers=0, constant_epochs=1)


def train_videos(decoded):
    return load_manifest(decoded).videos


def test_export_loads_into_torchvision_and_card_says_what_ran(decoded_sample, tmp_path):
    card, _ = pretrain(load_manifest(decoded_sample), train_videos(decoded_sample), TINY,
                       tmp_path, progress=False)
    model = torchvision.models.resnet18()
    missing = model.load_state_dict(torch.load(tmp_path / BACKBONE, weights_only=True),
                                    strict=False)
    assert missing.missing_keys == ["fc.weight", "fc.bias"] and not missing.unexpected_keys
    saved = json.loads((tmp_path / CARD).read_text())
    assert saved == card.to_dict() and RunCard.load(tmp_path / CARD) == card
    assert saved["epochs"] == 3 and saved["train_videos"] == 8
    assert saved["normalisation"] == {"mean": [0.5] * 3, "std": [0.25] * 3}  # for fine-tuning
    assert {"contrastive", "supervised", "total", "lr"} <= set(saved["final_losses"])
    metrics = (tmp_path / "dvclive" / "plots" / "metrics" / "train" / "total.tsv").read_text()
    assert len(metrics.strip().splitlines()) == 1 + 3


def test_pair_spec_follows_preset_and_method():
    def spec(**values):
        return build_method(TrainConfig(**values)).pair_spec()

    code, mix_first = spec(preset="code")
    assert code.mode == "ppi" and code.shared_weight and not code.chronological and not mix_first
    paper, mix_first = spec(preset="paper")
    assert paper.chronological and not paper.shared_weight and mix_first
    assert (code.alpha, code.beta) == (0.5, 0.5)
    assert spec(pair_mode="two_frames")[0].mode == "two_frames"
    assert spec(mix_alpha=2.0)[0].alpha == 2.0
    assert spec(method="simclr", pair_mode="ppi")[0].mode == "same_frame"


def test_frame_level_negatives_train(decoded_sample, tmp_path):
    """USCL Table 2 "I2 only": PPI positives, pairs drawn per frame (more batches)."""
    config = replace(TINY, epochs=1, negatives="frames")
    card, _ = pretrain(load_manifest(decoded_sample), train_videos(decoded_sample), config,
                       tmp_path, progress=False)
    assert card.params["negatives"] == "frames"
    assert all(torch.isfinite(torch.tensor(v)) for v in card.final_losses.values())


def test_scratch_exports_the_seeded_initialisation(decoded_sample, tmp_path):
    config = replace(TINY, method="scratch")
    for run in ("a", "b"):
        pretrain(load_manifest(decoded_sample), train_videos(decoded_sample), config,
                 tmp_path / run, progress=False)
    a, b = (torch.load(tmp_path / run / BACKBONE, weights_only=True) for run in ("a", "b"))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not (tmp_path / "a" / CHECKPOINT).exists()


def test_schedule_is_constant_then_cosine_to_zero():
    assert [constant_then_cosine(e, 300, 10) for e in (0, 9, 10)] == [1.0, 1.0, 1.0]
    assert constant_then_cosine(155, 300, 10) == pytest.approx(0.5)
    assert constant_then_cosine(299, 300, 10) < 1e-3


def test_schedules_change_per_epoch_or_per_step():
    assert constant_then_cosine(155.9, 300, 10) == constant_then_cosine(155, 300, 10)
    assert warmup_then_cosine(4.5, 300, 10) == warmup_then_cosine(4, 300, 10)
    assert cosine_per_step(0, 80) == 1.0 and cosine_per_step(40, 80) == pytest.approx(0.5)
    assert cosine_per_step(0.5, 80) < cosine_per_step(0.25, 80) < 1.0


def test_the_engine_updates_the_lr_after_every_step(decoded_sample, tmp_path):
    """8 videos in batches of 4: 2 steps per epoch, and the scheduler steps after each."""
    manifest = load_manifest(decoded_sample)
    config = replace(TINY, lr_schedule="cosine_per_step")
    pretrain(manifest, train_videos(decoded_sample), config, tmp_path, progress=False,
             log_metrics=False)
    history = checkpoint_history(tmp_path / CHECKPOINT)
    assert [record["lr"] for record in history] == pytest.approx(
        [config.lr * cosine_per_step(epoch, 3) for epoch in range(3)])
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["scheduler"]["last_epoch"] == 3 * 2


def test_meta_uscl_schedule_warms_up_exponentially_then_cosine():
    """Meta-USCL code: 0.1 + 0.9 exp(-5 (1 - e/10)^2) up to epoch 10, then cosine."""
    assert warmup_then_cosine(0, 300, 10) == pytest.approx(0.1 + 0.9 * 2.718281828 ** -5)
    assert warmup_then_cosine(5, 300, 10) == pytest.approx(0.1 + 0.9 * 2.718281828 ** -1.25)
    assert warmup_then_cosine(10, 300, 10) == 1.0
    assert warmup_then_cosine(155, 300, 10) == pytest.approx(0.5)
    factors = [warmup_then_cosine(e, 300, 10) for e in range(300)]
    assert factors[:11] == sorted(factors[:11]) and factors[10:] == sorted(factors[10:])[::-1]


def test_label_fraction_keeps_a_seeded_share():
    videos = pd.DataFrame({"label": ["covid", "regular"] * 50 + [None] * 10})
    labels, classes = label_indices(videos, 0.1, seed=0)
    assert classes == ["covid", "regular"]
    assert sum(label != -1 for label in labels) == 10
    assert labels == label_indices(videos, 0.1, seed=0)[0]
    assert sum(label != -1 for label in label_indices(videos, 0.001, seed=0)[0]) == 1


SCRIPT = """
import sys
from pathlib import Path
from dataclasses import replace
from pipeline.config import TrainConfig
from pipeline.data.manifest import load_manifest
from pipeline.pretrain.engine import pretrain
manifest = load_manifest(Path(sys.argv[1]))
config = TrainConfig(epochs=4, image_size=32, batch_size=4, workers=0, constant_epochs=1)
pretrain(manifest, manifest.videos, config, Path(sys.argv[2]), progress=False)
"""


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_weights(decoded_sample, tmp_path):
    def run(out):
        return subprocess.Popen([sys.executable, "-c", SCRIPT, str(decoded_sample), str(out)])

    assert run(tmp_path / "whole").wait() == 0
    process = run(tmp_path / "killed")
    deadline = time.monotonic() + 120
    while not (tmp_path / "killed" / CHECKPOINT).exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    epoch = torch.load(tmp_path / "killed" / CHECKPOINT, weights_only=True)["epoch"]
    assert epoch < 3, "killed before the end"
    assert run(tmp_path / "killed").wait() == 0
    whole, resumed = (torch.load(tmp_path / name / BACKBONE, weights_only=True)
                      for name in ("whole", "killed"))
    assert all(torch.equal(whole[key], resumed[key]) for key in whole)
    losses = [json.loads((tmp_path / name / CARD).read_text())["final_losses"]
              for name in ("whole", "killed")]
    for name in ("contrastive", "supervised", "total", "lr"):
        assert losses[0][name] == losses[1][name]


def test_a_checkpoint_of_other_params_is_not_resumed(decoded_sample, tmp_path):
    manifest, videos = load_manifest(decoded_sample), train_videos(decoded_sample)
    pretrain(manifest, videos, replace(TINY, epochs=1), tmp_path, progress=False)
    card, _ = pretrain(manifest, videos, replace(TINY, epochs=1, method="hico"), tmp_path,
                       progress=False)
    assert card.method == "hico" and "contrastive_local" in card.final_losses


DDP_SCRIPT = """
import sys, torch
from pathlib import Path
from pipeline.config import TrainConfig
from pipeline.data.manifest import load_manifest
from pipeline.pretrain.engine import pretrain
manifest = load_manifest(Path(sys.argv[1]))
config = TrainConfig(method=sys.argv[3], epochs=2, image_size=32, batch_size=2, workers=0,
                     constant_epochs=1)
card, method = pretrain(manifest, manifest.videos, config, Path(sys.argv[2]), progress=False)
rank = torch.distributed.get_rank()
torch.save(method.state_dict(), Path(sys.argv[2]) / f"rank{rank}.pt")
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
@pytest.mark.parametrize("method", ["uscl", "hico", "meta_uscl"])
def test_two_gloo_ranks_stay_in_sync(decoded_sample, tmp_path, method):
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(port), "--no-python",
         sys.executable, "-c", DDP_SCRIPT, str(decoded_sample), str(tmp_path), method],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    tensors = [key for key, value in rank0.items() if isinstance(value, torch.Tensor)]
    assert all(torch.equal(rank0[key], rank1[key]) for key in tensors)  # CMW-Net's too
    exported = torch.load(tmp_path / "backbone.pt", weights_only=True)
    assert all(torch.equal(value, rank0[f"backbone.{key}"]) for key, value in exported.items())


TWO_NODES_SCRIPT = """
import json, sys, torch
from pathlib import Path
from pipeline.config import TrainConfig
from pipeline.data.manifest import load_manifest
from pipeline.pretrain import loader
from pipeline.pretrain.engine import pretrain
seen = []
def recording(*args, **kwargs):  # what this rank's loader really iterates
    batches = original(*args, **kwargs)
    seen.extend(index for batch in batches for index in batch)
    return batches
original, loader.video_batches = loader.video_batches, recording
manifest = load_manifest(Path(sys.argv[1]))
config = TrainConfig(epochs=1, image_size=32, batch_size=2, workers=0, constant_epochs=1)
card, method = pretrain(manifest, manifest.videos, config, Path(sys.argv[2]), progress=False)
rank = torch.distributed.get_rank()
torch.save(method.state_dict(), Path(sys.argv[2]) / f"rank{rank}.pt")
(Path(sys.argv[2]) / f"seen{rank}.json").write_text(json.dumps(sorted(set(seen))))
torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_two_nodes_rendezvous_and_train_disjoint_videos_in_sync(decoded_sample, tmp_path):
    """``torchrun --nnodes 2`` as two launchers on this host (gloo): one process group across
    both, each rank's loader sees its own videos, and both end with the same weights."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
         "--no-python", sys.executable, "-c", TWO_NODES_SCRIPT, str(decoded_sample),
         str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)]
    for node in nodes:
        _, stderr = node.communicate(timeout=300)
        assert node.returncode == 0, stderr[-3000:]
    seen = [set(json.loads((tmp_path / f"seen{rank}.json").read_text())) for rank in (0, 1)]
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(rank0[key], rank1[key]) for key, value in rank0.items()
               if isinstance(value, torch.Tensor))
