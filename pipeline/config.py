"""Typed configuration: ``params.yaml`` sections become frozen dataclasses, validated on load.

Stage scripts read params with :func:`load_params` and pass these objects to plain library
functions; the library itself never reads ``params.yaml``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from pipeline.storage import dataset_path

if TYPE_CHECKING:
    from pipeline.storage import Location

T = TypeVar("T")

# The choices params.yaml may name. Kept here, not read from the registries, so params are
# validated before torch is imported; tests check they equal the registries.
METHODS = ("uscl", "hico", "simclr", "supervised", "scratch", "meta_uscl", "meta_simclr")
PRESETS = ("code", "paper", "proto")
SCAN_AREA_MODES = ("off", "mask", "crop", "crop_and_mask")
DECODE_ENGINES = ("local", "ray")
LR_SCHEDULES = ("constant_then_cosine", "cosine_per_step")
# What a null knob means per preset. ``proto`` is the one-file prototype's recipe (issue 11,
# ``docs/methods.md`` §13): the paper's pair rule (time order, two weights, mixed before
# augmenting), no supervised branch, a 128-d projection, jitter on 80 % of views, cosine per
# step from the first step.
PRESET_DEFAULTS = {
    "code": {"supervised_weight": 0.2, "projection_dim": 256, "jitter_p": 1.0,
             "lr_schedule": "constant_then_cosine"},
    "paper": {"supervised_weight": 0.2, "projection_dim": 256, "jitter_p": 1.0,
              "lr_schedule": "constant_then_cosine"},
    "proto": {"supervised_weight": 0.0, "projection_dim": 128, "jitter_p": 0.8,
              "lr_schedule": "cosine_per_step"},
}
BACKBONES = ("resnet18", "resnet34", "resnet50", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
             "shufflenet_v2_x1_5", "shufflenet_v2_x2_0")
PAIR_MODES = ("ppi", "two_frames", "same_frame", "first_frame")
NEGATIVES = ("videos", "frames")
VIEWS_ON = ("auto", "workers", "device")


def check_choice(where: str, value: object, choices: tuple) -> None:
    """An error naming the key, the value and the valid choices unless ``value`` is one."""
    if value not in choices:
        raise ValueError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")


def from_mapping(cls: type[T], values: dict[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys are an error naming ``where``."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                         f"expected some of {', '.join(sorted(known))}")
    try:
        return cls(**values)
    except TypeError as error:
        raise ValueError(f"{where}: {error}") from error


@dataclass(frozen=True)
class DatasetConfig:
    """A dataset folder: videos, DICOM files, images or frame folders (any depth) under
    ``root/videos`` and an optional labels.csv, listed by the inventory stage. ``labels: null``
    means unlabelled videos; ``videos: .`` takes the videos from ``root`` itself. ``folds`` > 1
    also persists a k-fold assignment.
    """

    root: str
    videos: str = "videos"
    labels: str | None = "labels.csv"
    folds: int = 0
    frame_folders: bool = False  # every folder of images is a clip (else: labels.csv rows)
    group_salt: str = "uspipe"   # salt of a DICOM's default group (hashed Patient ID)
    class_folders: bool = False  # label = the first folder under videos (BUSI-style layout)

    def __post_init__(self) -> None:
        if self.folds == 1 or self.folds < 0:
            raise ValueError(f"folds must be 0 (none) or >= 2, got {self.folds}")
        for name, value in (("videos", self.videos), ("labels", self.labels)):
            if value is not None and (Path(value).is_absolute() or ".." in Path(value).parts):
                raise ValueError(f"{name}: {value!r} must be a path inside root ({self.root}) so "
                                 "that the pipeline tracks it; point root at the folder that "
                                 "holds both videos and labels")

    @property
    def videos_path(self) -> Location:
        return dataset_path(self.root) / self.videos  # a folder, or under a URL root

    @property
    def labels_path(self) -> Location | None:
        return dataset_path(self.root) / self.labels if self.labels else None


@dataclass(frozen=True)
class DecodeConfig:
    """Frame sampling and shard encoding (see :mod:`pipeline.data.sampling` for the rule)."""

    rate: float = 3.0
    max_frames: int | None = None
    short_side: int | None = None
    jpeg_quality: int = 95
    min_frames: int = 1
    workers: int = 2
    strict: bool = False
    skip_nonref: bool = True
    assume_fps: float | None = None  # rate for a multi-frame DICOM that states none
    folder_fps: float | None = None  # rate of a frame folder without a fps in labels.csv
    scan_area: str = "off"  # off | mask | crop | crop_and_mask (pipeline/data/scan_area.py)
    engine: str = "local"   # local (process pool) | ray (tasks on a Ray cluster)
    ray_address: str | None = None  # a running cluster ("auto", "ray://host:10001"); null: local

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"decode.rate must be positive, got {self.rate}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"decode.jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"decode.max_frames must be >= 1 or null, got {self.max_frames}")
        if self.short_side is not None and self.short_side < 8:
            raise ValueError(f"decode.short_side must be >= 8 or null, got {self.short_side}")
        if self.min_frames < 1:
            raise ValueError(f"decode.min_frames must be >= 1, got {self.min_frames}")
        if self.workers < 1:
            raise ValueError(f"decode.workers must be >= 1, got {self.workers}")
        if self.scan_area is False:  # YAML reads a bare `off` as false
            object.__setattr__(self, "scan_area", "off")
        check_choice("decode.scan_area", self.scan_area, SCAN_AREA_MODES)
        check_choice("decode.engine", self.engine, DECODE_ENGINES)
        for name in ("assume_fps", "folder_fps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"decode.{name} must be positive or null, got {value}")

    def cache_fields(self) -> dict[str, Any]:
        """The fields that change a shard or a manifest row (workers, strict and the engine
        do not; skip_nonref changes only ``decoded_frames``)."""
        return {"rate": float(self.rate), "max_frames": self.max_frames,
                "short_side": self.short_side, "jpeg_quality": self.jpeg_quality,
                "min_frames": self.min_frames, "skip_nonref": self.skip_nonref,
                "assume_fps": self.assume_fps, "folder_fps": self.folder_fps,
                "scan_area": self.scan_area}


@dataclass(frozen=True)
class SplitConfig:
    """Video-level train/val split (grouped, stratified) and k-fold seed."""

    seed: int = 0
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"split.val_fraction must be in (0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class SampleConfig:
    """The embedded sample: synthetic lung-ultrasound clips (:mod:`pipeline.data.synthetic`)
    and breast-lesion images with masks (:mod:`pipeline.data.phantom`)."""

    seed: int = 0
    pretrain_videos: int = 36
    downstream_videos: int = 45
    lesion_images: int = 60
    output: str = "data/sample"


@dataclass(frozen=True)
class MetaConfig:
    """Meta-USCL's CMW-Net and online meta update (``train.meta``; docs/methods.md §6).

    ``None`` means "per preset": ``divide_by_weight_sum`` (code True, paper False: Meta-USCL
    Eq. 1 as written),
    ``meta_set`` (code ``released``: first frames of a random 20 % of ALL videos, which leaks
    training videos; paper ``held_out``: PPI pairs of the held-out split only) and
    ``virtual_momentum`` (code: the virtual SGD step uses the main optimiser's momentum and
    weight decay; paper Eq. 7: a plain gradient step). ``virtual_lr: None`` uses the main
    optimiser's current lr, as the released code does.
    """

    lr: float = 0.1               # main model SGD lr (paper alpha_1)
    momentum: float = 0.9
    warmup_epochs: int = 10
    weight_net_lr: float = 6e-5   # CMW-Net Adam lr (paper alpha_2)
    weight_net_hidden: int = 10
    virtual_lr: float | None = None
    virtual_momentum: bool | None = None
    divide_by_weight_sum: bool | None = None
    meta_set: str | None = None
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_choice("train.meta.meta_set", self.meta_set, (None, "held_out", "released"))
        if self.batch_size < 2:
            raise ValueError("train.meta.batch_size must be >= 2")


@dataclass(frozen=True)
class HiCoConfig:
    """HiCo's knobs (``train.hico``; HiCo Eqs. 5-9, ``docs/methods.md`` §4.2, §5.3).

    ``peer_weight``: lambda, the weight of the peer-level terms against the cross-level ones;
    ``alpha``: the softened CE's smoothing; ``fpn_batch_norm``: None = per preset (paper:
    BatchNorm + ReLU after every FPN convolution; code: plain convolutions).
    """

    peer_weight: float = 0.5
    alpha: float = 0.2
    fpn_batch_norm: bool | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.alpha < 1:
            raise ValueError(f"train.hico.alpha must be in [0, 1), got {self.alpha}")


@dataclass(frozen=True)
class TrainConfig:
    """Pretraining (``train:`` in params.yaml); the paper schedule is 300 epochs, batch 32,
    224 px, 10 constant epochs (docs/methods.md §7). Defaults are CPU-sized for the sample."""

    method: str = "uscl"
    preset: str = "code"
    backbone: str = "resnet18"
    imagenet: bool | str = False
    image_size: int = 64
    epochs: int = 3
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 1e-4
    constant_epochs: int = 10
    seed: int = 0
    workers: int = 2
    label_fraction: float = 1.0
    pair_mode: str = "ppi"
    negatives: str = "videos"
    mix_alpha: float | None = None  # None: the method's (USCL 0.5, Meta-USCL code 3)
    mix_beta: float | None = None   # None: the method's (USCL 0.5, Meta-USCL code 5)
    temperature: float = 0.5
    supervised_weight: float | None = None  # None: per preset (PRESET_DEFAULTS)
    projection_dim: int | None = None
    jitter_p: float | None = None           # probability that a view is colour-jittered
    lr_schedule: str | None = None
    views_on: str = "auto"
    amp: bool = True                   # bf16 autocast where the device runs bf16 fast
    channels_last: bool | None = None  # None: on when bf16 autocast is (pipeline.precision)
    compile: bool = False
    hico: HiCoConfig = field(default_factory=HiCoConfig)
    meta: MetaConfig = field(default_factory=MetaConfig)

    def __post_init__(self) -> None:
        for name, cls in (("hico", HiCoConfig), ("meta", MetaConfig)):
            if isinstance(getattr(self, name), dict):  # a nested section of params.yaml
                object.__setattr__(self, name,
                                   from_mapping(cls, getattr(self, name), f"train.{name}"))
        for name, choices in (("method", METHODS), ("preset", PRESETS),
                              ("backbone", BACKBONES), ("pair_mode", PAIR_MODES),
                              ("negatives", NEGATIVES), ("views_on", VIEWS_ON)):
            check_choice(f"train.{name}", getattr(self, name), choices)
        knobs = self.preset_knobs()
        check_choice("train.lr_schedule", knobs["lr_schedule"], LR_SCHEDULES)
        if not 0 <= knobs["jitter_p"] <= 1:
            raise ValueError(f"train.jitter_p must be in [0, 1], got {knobs['jitter_p']}")
        if not 0 <= self.label_fraction <= 1:
            raise ValueError(f"train.label_fraction must be in [0, 1], got {self.label_fraction}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("train.epochs must be >= 1 and train.batch_size >= 2")

    def preset_knobs(self) -> dict[str, Any]:
        """The preset's knobs (``PRESET_DEFAULTS``), each as given here where it is not null."""
        return {name: default if getattr(self, name) is None else getattr(self, name)
                for name, default in PRESET_DEFAULTS[self.preset].items()}

    def resolved(self) -> TrainConfig:
        """This config with its preset's knobs written out: what a run reads and records.
        A config keeps its null knobs until then, so that ``dataclasses.replace(config,
        preset="proto")`` takes the proto preset's knobs, not the earlier preset's."""
        return replace(self, **self.preset_knobs())

    @classmethod
    def from_card(cls, params: dict[str, Any]) -> TrainConfig:
        """The config a run's card recorded, read with today's names (older cards say
        ``jitter_on`` for ``views_on`` and ``meta.normalise`` for
        ``meta.divide_by_weight_sum``)."""
        values = {RENAMED.get(key, key): value for key, value in params.items()}
        if isinstance(values.get("meta"), dict):
            values["meta"] = {RENAMED_META.get(key, key): value
                              for key, value in values["meta"].items()}
        return from_mapping(cls, values, "card.json params")


RENAMED = {"jitter_on": "views_on"}
RENAMED_META = {"normalise": "divide_by_weight_sum"}


@dataclass(frozen=True)
class FinetuneConfig:
    """Downstream fine-tuning and evaluation (``finetune:``; docs/methods.md §8).

    ``mode``: ``last_block`` (the papers' "last 3 layers": the last residual block + a new
    classifier), ``linear`` or ``full``. ``frozen_bn``: ``update`` keeps the whole network in
    train mode so frozen BatchNorm statistics adapt to the new data (the released code);
    ``keep`` freezes them too. ``recipe``: ``tmi`` (30 epochs, batch 128) or ``code`` (100
    epochs, batch 32); ``epochs`` / ``batch_size`` override it. ``seeds``: training seeds;
    ``fold_seeds``: repeated cross-validation, one grouped k-fold assignment per seed (as
    ``probe.fold_seeds``); null = the persisted folds only.
    """

    classes: list[str] = field(default_factory=lambda: ["covid", "pneumonia", "regular"])
    probes: list[str] | None = field(default_factory=lambda: ["convex"])
    drop_uncertain: bool = True
    normal_class: str | None = "regular"
    mode: str = "last_block"
    frozen_bn: str = "update"
    recipe: str = "tmi"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float = 0.01
    weight_decay: float = 1e-4
    image_size: int = 64
    seeds: list[int] = field(default_factory=lambda: [0])
    fold_seeds: list[int] | None = None
    workers: int = 2
    amp: bool = True  # bf16 autocast (and channels_last) where the CPU runs bf16 fast

    RECIPES = {"tmi": (30, 128), "code": (100, 32)}

    def __post_init__(self) -> None:
        choices = {"mode": ("last_block", "linear", "full"), "frozen_bn": ("update", "keep"),
                   "recipe": tuple(self.RECIPES)}
        for name, allowed in choices.items():
            check_choice(f"finetune.{name}", getattr(self, name), allowed)
        if len(self.classes) < 2 or not self.seeds:
            raise ValueError("finetune needs at least two classes and one seed")

    def schedule(self) -> tuple[int, int]:
        """(epochs, batch size): the recipe's unless overridden."""
        epochs, batch = self.RECIPES[self.recipe]
        return self.epochs or epochs, self.batch_size or batch


@dataclass(frozen=True)
class ProbeConfig:
    """Frozen-feature protocols (``probe:``; ``docs/methods.md`` §8.6) on the downstream
    videos and folds that fine-tuning uses (``finetune.classes``, ``probes``,
    ``drop_uncertain``, ``image_size``).

    ``c``: inverse L2 strength of the linear probe, as scikit-learn's ``C``; ``k`` and
    ``knn_temperature``: the k-NN vote (null temperature: uniform votes). ``fold_seeds``:
    repeated cross-validation, one grouped k-fold assignment per seed (the same algorithm as
    the persisted split); null = the persisted folds only.
    """

    protocols: list[str] = field(default_factory=lambda: ["linear", "knn"])
    fold_seeds: list[int] | None = None
    c: float = 1.0
    k: int = 20
    knn_temperature: float | None = 0.07

    def __post_init__(self) -> None:
        for protocol in self.protocols:
            check_choice("probe.protocols", protocol, ("linear", "knn"))
        if not self.protocols or self.c <= 0 or self.k < 1:
            raise ValueError("probe needs a protocol, c > 0 and k >= 1")


@dataclass(frozen=True)
class TaskConfig:
    """A further downstream evaluation on images (``tasks.<name>``; one stage ``task@<name>``
    each; docs/methods.md §8.5): image classification, lesion segmentation or detection of a
    dataset under ``data:`` (listed, decoded and split by patient like any dataset: set its
    ``folds``), k-fold by patient with the pretrained backbone.

    ``positive``: the class whose precision, recall, F1 and AUC are the binary metrics
    (Meta-USCL Table IV; default: the second class). Segmentation masks are named by the
    dataset's labels.csv ``mask`` column, relative to its folder. ``mode``:
    classification as ``finetune.mode``; segmentation ``full`` (backbone and decoder),
    ``last_block`` or ``decoder`` (a frozen backbone); detection (Mask R-CNN) ``frozen_stem``
    (the seeds': conv1, bn1 and layer1 frozen) or ``full``.
    """

    kind: str
    dataset: str
    classes: list[str] = field(default_factory=list)
    positive: str | None = None
    image_size: int = 64
    epochs: int = 4
    batch_size: int = 32
    lr: float = 0.001
    weight_decay: float = 1e-4
    mode: str = "full"
    seeds: list[int] = field(default_factory=lambda: [0])
    workers: int = 2

    MODES = {"classification": ("last_block", "linear", "full"),
             "segmentation": ("full", "last_block", "decoder"),
             "detection": ("frozen_stem", "full")}

    def __post_init__(self) -> None:
        check_choice("tasks.kind", self.kind, tuple(self.MODES))
        check_choice("tasks.mode", self.mode, self.MODES[self.kind])
        if self.kind == "classification" and len(self.classes) < 2:
            raise ValueError("tasks: a classification task needs at least two classes")
        if self.positive is not None and self.positive not in self.classes:
            raise ValueError(f"tasks.positive: {self.positive!r} is not one of the classes")
        if not self.seeds or self.epochs < 1:
            raise ValueError("tasks: seeds must not be empty and epochs >= 1")

    def finetune(self) -> FinetuneConfig:
        """The k-fold fine-tuning of a classification task, in ``finetune:``'s terms."""
        return FinetuneConfig(classes=list(self.classes), probes=None, drop_uncertain=False,
                              normal_class=None, mode=self.mode, epochs=self.epochs,
                              batch_size=self.batch_size, lr=self.lr,
                              weight_decay=self.weight_decay, image_size=self.image_size,
                              seeds=list(self.seeds), workers=self.workers)


@dataclass(frozen=True)
class Params:
    sample: SampleConfig = field(default_factory=SampleConfig)
    data: dict[str, DatasetConfig] = field(default_factory=dict)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    tasks: dict[str, TaskConfig] = field(default_factory=dict)

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.data:
            raise KeyError(f"no dataset {name!r} under data: in params (have: "
                           f"{', '.join(self.data) or 'none'})")
        return self.data[name]

    def task(self, name: str) -> TaskConfig:
        if name not in self.tasks:
            raise KeyError(f"no task {name!r} under tasks: in params (have: "
                           f"{', '.join(self.tasks) or 'none'})")
        return self.tasks[name]


SECTIONS = {"sample": SampleConfig, "decode": DecodeConfig, "split": SplitConfig,
            "train": TrainConfig, "finetune": FinetuneConfig, "probe": ProbeConfig}


def parse_params(raw: dict[str, Any], where: str = "params.yaml") -> Params:
    """Validate the sections this package knows; other sections are left to later stages."""
    sections = {name: from_mapping(cls, raw.get(name), f"{where}: {name}")
                for name, cls in SECTIONS.items()}
    data = {name: from_mapping(DatasetConfig, values, f"{where}: data.{name}")
            for name, values in (raw.get("data") or {}).items()}
    tasks = {name: from_mapping(TaskConfig, values, f"{where}: tasks.{name}")
             for name, values in (raw.get("tasks") or {}).items()}
    unknown = {name: task.dataset for name, task in tasks.items() if task.dataset not in data}
    if unknown:
        raise ValueError(f"{where}: tasks name datasets not under data: {unknown}")
    return Params(data=data, tasks=tasks, **sections)


def load_params(path: str | Path = "params.yaml") -> Params:
    with open(path, encoding="utf-8") as handle:
        return parse_params(yaml.safe_load(handle) or {}, str(path))
