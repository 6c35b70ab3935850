"""The search space: every ``suggest_*`` call of the product lives here.

``suggest_config(trial, space)`` turns a trial into a complete :class:`RunConfig`, and only
through the trial's parameters, so ``optuna.trial.FixedTrial(best.params)`` replays a trial
exactly. Ranges are static (Optuna's samplers assume that); where one choice limits another
(a small input cannot take many pooling steps) the value is clamped after sampling.
:class:`SearchSpace` holds the bounds a study was created with and is stored with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from optuna.trial import BaseTrial, FixedTrial, FrozenTrial

from data import AugmentConfig
from model import CNNConfig
from model.channels import CHANNEL_SETS
from model.config import BACKBONE_POOLS, BACKBONES, PATCH_POOLS, BackboneConfig, PatchConfig
from training.config import RunConfig, TrainConfig

ACTIVATIONS = ("relu", "silu", "gelu", "leaky_relu", "mish")
DEFAULT_CHANNEL_SETS = ("gray_normal", "gray_w_normal", "all")
# Parameters added to the space later -> the value trials recorded before them had.
ADDED_LATER = {"flips": True, "stem": "single", "backbone": "scratch"}
SCRATCH = "scratch"  # the ``backbone`` choice of a CNN trained from scratch
BACKBONE_MODES = ("frozen", "finetune", "patch")
"""How a pretrained backbone is used: frozen under a pooled head, fine-tuned, or its
intermediate stages scored patch by patch with a memory bank (``model.patch``)."""
PATCH_MEMORY = (0, 4096)  # good patches in the bank (0: the trained head alone)
PATCH_WIDTHS = (0, 32, 64, 128)
MIN_FEATURE_MAP = 2  # never pool below 2x2 before the head
MAX_WIDTH = 512


@dataclass(frozen=True)
class SearchSpace:
    """Bounds of a study's search (a budget, not a model): set once, stored in the study."""

    sizes: tuple[int, ...] = (96, 128, 160)
    depth: tuple[int, int] = (3, 5)
    base_widths: tuple[int, ...] = (16, 24, 32, 48)
    batch_sizes: tuple[int, ...] = (32, 64, 128)
    tasks: tuple[str, ...] = ("multilabel", "multiclass")
    kernels_first: tuple[int, ...] = (3, 5, 7)
    kernels_rest: tuple[int, ...] = (3, 5)
    dense_widths: tuple[int, ...] = (0, 64, 128, 256)
    head_pools: tuple[str, ...] = ("avg", "max")
    stems: tuple[str, ...] = ("single", "split")  # split: NORMAL gets its own first block
    optimizers: tuple[str, ...] = ("adamw", "sgd")
    lr: tuple[float, float] = (1e-4, 3e-2)
    # Every default set sees relief (NORMAL: physical defects) and ink (print defects); a
    # set without NORMAL is blind to physical defects and stays available on request only.
    channel_sets: tuple[str, ...] = DEFAULT_CHANNEL_SETS
    epochs: int = 30
    patience: int = 8
    metric: str = "graded_ap"
    threshold: str = "max_f1"
    min_recall: float | None = None
    noise_aware: bool = False  # also tune the loss weight of suspected mislabels
    # Pretrained timm backbones searched beside the scratch CNN: those whose ImageNet weights
    # this machine had when the study was created (none: the scratch family alone).
    backbones: tuple[str, ...] = ()
    scratch: bool = True  # False: the pretrained backbones alone
    backbone_sizes: tuple[int, ...] = (128, 160)
    backbone_modes: tuple[str, ...] = BACKBONE_MODES  # frozen: only the head trains
    patch_sizes: tuple[int, ...] = (224,)  # inputs of the patch family (native-like detail)
    finetune_epochs: int = 15  # pretrained weights converge in fewer epochs than scratch
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):  # JSON round trips give lists; the dataclass is hashable
            v = getattr(self, f.name)
            if isinstance(v, list):
                object.__setattr__(self, f.name, tuple(v))
        unknown = set(self.channel_sets) - set(CHANNEL_SETS)
        if unknown:
            raise ValueError(f"unknown channel set(s) {sorted(unknown)}; known: "
                             f"{sorted(CHANNEL_SETS)}")
        if not 2 <= self.depth[0] <= self.depth[1] <= 6:
            raise ValueError(f"depth range {self.depth} must lie within 2..6")
        unknown = set(self.backbones) - set(BACKBONES)
        if unknown:
            raise ValueError(f"unknown backbone(s) {sorted(unknown)}; known: {list(BACKBONES)}")
        if set(self.backbone_modes) - set(BACKBONE_MODES) or not self.backbone_modes:
            raise ValueError(f"backbone modes {list(self.backbone_modes)} must be some of "
                             f"{list(BACKBONE_MODES)}")
        if not self.scratch and not self.backbones:
            raise ValueError("a search without the scratch CNN needs pretrained backbones")

    @property
    def families(self) -> tuple[str, ...]:
        """The ``backbone`` choices: the scratch CNN, then each pretrained backbone."""
        return (SCRATCH,) * self.scratch + self.backbones

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SearchSpace:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def widths_for(base: int, growth: float, depth: int) -> tuple[int, ...]:
    """Widths that grow geometrically per block, rounded to multiples of 8 (tensor cores)."""
    return tuple(min(MAX_WIDTH, max(8, int(base * growth**i / 8 + 0.5) * 8))
                 for i in range(depth))


def max_depth_for(size: int) -> int:
    depth = 0
    while size // 2 ** (depth + 1) >= MIN_FEATURE_MAP:
        depth += 1
    return depth


def suggest_config(trial: BaseTrial, space: SearchSpace = SearchSpace()) -> RunConfig:
    """Sample one complete training run from ``space``."""
    backbone = (trial.suggest_categorical("backbone", list(space.families))
                if space.backbones else SCRATCH)
    channels = CHANNEL_SETS[trial.suggest_categorical("channels", list(space.channel_sets))]
    dense_width = trial.suggest_categorical("dense_width", list(space.dense_widths))
    task = trial.suggest_categorical("task", list(space.tasks))
    if backbone == SCRATCH:
        model = _suggest_scratch(trial, space, channels, dense_width, task)
        frozen, epochs, lr_scale = False, space.epochs, TrainConfig.backbone_lr_scale
    elif (mode := trial.suggest_categorical("backbone_mode",
                                            list(space.backbone_modes))) == "patch":
        model = _suggest_patch(trial, space, backbone, channels, task)
        frozen, epochs, lr_scale = True, space.epochs, 0.0
    else:
        frozen = mode == "frozen"
        # fine-tuning moves ImageNet weights gently; frozen, only the head trains
        lr_scale = 0.0 if frozen else trial.suggest_float("backbone_lr_scale", 0.01, 0.3,
                                                          log=True)
        epochs = space.epochs if frozen else min(space.epochs, space.finetune_epochs)
        model = BackboneConfig(
            backbone=backbone, channels=channels,
            input_size=trial.suggest_categorical("backbone_size", list(space.backbone_sizes)),
            head_pool=trial.suggest_categorical("backbone_pool", list(BACKBONE_POOLS)),
            dense_width=dense_width,
            dense_dropout=trial.suggest_float("dense_dropout", 0.0, 0.5),
            task=task)

    optimizer = trial.suggest_categorical("optimizer", list(space.optimizers))
    loss = trial.suggest_categorical("loss", ["bce", "focal"])
    imbalance = trial.suggest_categorical("imbalance", ["weighted", "balanced", "none"])
    weight = trial.suggest_float("weight_strength", 0.25, 1.5) if imbalance == "weighted" else 0
    train = TrainConfig(
        epochs=epochs,
        batch_size=trial.suggest_categorical("batch_size", list(space.batch_sizes)),
        optimizer=optimizer,
        lr=trial.suggest_float("lr", *space.lr, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        schedule=trial.suggest_categorical("schedule", ["cosine", "onecycle"]),
        loss=("ce" if task == "multiclass" and loss == "bce" else loss),
        pos_weight_factor=weight if task != "multiclass" else 0.0,
        class_weight_power=weight if task == "multiclass" else 0.0,
        focal_gamma=trial.suggest_float("focal_gamma", 0.5, 3.0) if loss == "focal" else 2.0,
        label_smoothing=trial.suggest_float("label_smoothing", 0.0, 0.1),
        neg_smoothing=trial.suggest_float("neg_smoothing", 0.0, 0.2),
        sampling="balanced" if imbalance == "balanced" else "shuffle",
        backbone_lr_scale=lr_scale,
        flagged_weight=(trial.suggest_float("flagged_weight", 0.0, 1.0)
                        if space.noise_aware else 1.0),
        early_stop_patience=space.patience,
        metric=space.metric,
        threshold=space.threshold,
        min_recall=space.min_recall,
        seed=space.seed,  # one seed for all trials: differences come from the parameters
    )
    # mirrored logos never come off the line, and at small budgets they cost print AP
    flips = trial.suggest_categorical("flips", [False, True])
    if frozen:  # its features are computed once: flips are the only augmentation left
        augment = AugmentConfig.from_strength(0.0, 0.0, flips=flips)
    else:
        augment = AugmentConfig.from_strength(trial.suggest_float("aug_geometric", 0.0, 1.0),
                                              trial.suggest_float("aug_photometric", 0.0, 1.0),
                                              flips=flips)
    return RunConfig(model=model, train=train, augment=augment)


def trial_config(trial: FrozenTrial, space: SearchSpace | dict) -> RunConfig:
    """The configuration ``trial`` trained, replayed from its parameters and the study's
    stored ``space`` (``FixedTrial``). Studies recorded before the replay kept it as the
    ``config`` user attribute, which still wins where present. Raises ``ValueError`` when
    the parameters do not fit the space (a study from an incompatible version)."""
    stored = trial.user_attrs.get("config")
    if stored:
        return RunConfig.from_dict(stored)
    if isinstance(space, dict):
        space = SearchSpace.from_dict(space)
    # Parameters added to the space later, with the value studies recorded before had.
    params = {**ADDED_LATER, **trial.params}
    try:
        return suggest_config(FixedTrial(params), space)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"trial {trial.number}'s parameters do not replay in this version's "
                         f"search space ({exc})") from None


def _suggest_patch(trial: BaseTrial, space: SearchSpace, backbone: str,
                   channels: tuple[str, ...], task: str) -> PatchConfig:
    # a patch says whether a defect is anywhere: the four-class head has no patch reading
    task = "multilabel" if task == "multiclass" else task
    width = trial.suggest_categorical("patch_width", list(PATCH_WIDTHS))
    return PatchConfig(
        backbone=backbone, channels=channels,
        input_size=trial.suggest_categorical("patch_size", list(space.patch_sizes)),
        memory=trial.suggest_categorical("patch_memory", list(PATCH_MEMORY)),
        pool=trial.suggest_categorical("patch_pool", list(PATCH_POOLS)),
        head_width=width, dense_dropout=trial.suggest_float("dense_dropout", 0.0, 0.5),
        task=task)


def _suggest_scratch(trial: BaseTrial, space: SearchSpace, channels: tuple[str, ...],
                     dense_width: int, task: str) -> CNNConfig:
    size = trial.suggest_categorical("input_size", list(space.sizes))
    depth = trial.suggest_int("depth", *space.depth)
    depth = max(2, min(depth, max_depth_for(size)))
    base = trial.suggest_categorical("base_width", list(space.base_widths))
    growth = trial.suggest_categorical("width_growth", [1.5, 2.0])
    kernel_first = trial.suggest_categorical("kernel_first", list(space.kernels_first))
    kernel_rest = trial.suggest_categorical("kernel_rest", list(space.kernels_rest))
    # A split stem gives NORMAL its own first block, so that the ink channels cannot drown
    # the relief; it only means something when both are there.
    split_able = "NORMAL" in channels and len(channels) > 1
    stem = trial.suggest_categorical("stem", list(space.stems)) if split_able else "single"
    return CNNConfig(
        channels=channels,
        input_size=size,
        widths=widths_for(base, growth, depth),
        kernel_sizes=(kernel_first,) + (kernel_rest,) * (depth - 1),
        convs_per_block=trial.suggest_int("convs_per_block", 1, 2),
        activation=trial.suggest_categorical("activation", list(ACTIVATIONS)),
        pool=trial.suggest_categorical("pool", ["max", "avg"]),
        spatial_dropout=trial.suggest_float("spatial_dropout", 0.0, 0.3),
        head_pool=trial.suggest_categorical("head_pool", list(space.head_pools)),
        dense_width=dense_width,
        dense_dropout=trial.suggest_float("dense_dropout", 0.0, 0.5) if dense_width else 0.0,
        task=task,
        stem=stem,
    )
