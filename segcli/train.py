"""``segpipe train``: the training settings (one dataclass, each default with its reason, named
presets) and the command line built from them. The training itself is ``segmodel.train``."""
from __future__ import annotations

import argparse
import dataclasses

from segmodel import preprocess
from segmodel.architectures import ARCHS, LAYOUTS

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("poly", "cosine", "constant")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
SKIP_SCALINGS = ("paper", "none")
NORMALIZATIONS = ("",) + preprocess.NORMALIZATIONS  # '': what the backbone weights expect


@dataclasses.dataclass(kw_only=True)
class TrainConfig:
    arch: str = "fcn8s"  # the paper's best variant; fcn16s/fcn32s for comparison
    backbone_weights: str = "imagenet"  # the paper fine-tunes from ImageNet; 'none' for scratch
    normalization: str = ""  # '' = what the backbone weights expect (see segmodel.preprocess)
    width: float = 1.0  # VGG16 as published; the tiny preset narrows it for CPU smoke runs
    fc_units: int = 4096  # fc6/fc7 as published
    image_size: int = 512  # training crop: DeepLab/torchvision use 480-513 on VOC/COCO
    batch_size: int = 8  # global batch; fits 512x512 FCN-8s on one 16 GB GPU in mixed precision
    epochs: int = 50
    max_steps: int = 0  # 0: no step budget beyond epochs
    steps_per_epoch: int = 0  # 0: images in the train split / batch_size
    optimizer: str = "sgd"  # SGD + momentum is what FCN and its successors were tuned with
    learning_rate: float = 0.01  # the usual SGD rate for a mean (not summed) per-pixel loss
    momentum: float = 0.9
    weight_decay: float = 5e-4  # the paper's value
    schedule: str = "poly"  # poly(0.9), the DeepLab schedule; 'cosine' or 'constant'
    min_scale: float = 0.5  # scale augmentation range of torchvision's reference recipe
    max_scale: float = 2.0
    jitter: float = 1.0  # mild photometric jitter
    dropout: float = 0.5  # as in VGG16's fc6/fc7
    batch_norm: bool = False  # VGG16 as published has none (and ImageNet weights expect none)
    skip_scaling: str = "paper"  # pool4 x 0.01, pool3 x 0.0001 (all-at-once FCN-8s); 'none': x 1
    class_weights: bool = False  # inverse-frequency weights from stats.json for rare classes
    # (median_freq / freq) ** power with class_weights: 1 is plain median-frequency balancing
    # (SegNet on CamVid), 0.5 damps it (pole 2.2 instead of 4.8, bicyclist 3.9 instead of 15).
    class_weight_power: float = 0.5
    mixed_precision: str = "auto"  # auto: mixed_float16 on GPU, float32 on CPU
    export_layout: str = "nhwc"  # 'nchw' adds the torchvision-style {'out': [N, C, H, W]} output
    seed: int = 0
    # Off: bit-for-bit repeatable runs need ordered input (each batch waits for its slowest
    # example) and TensorFlow's deterministic kernels, slower on GPU. On: same seed, same data and
    # hardware -> the same weights (for debugging and for comparing changes without noise).
    deterministic: bool = False

    def __post_init__(self):
        problems = [f"{name} must be one of {choices}, got {getattr(self, name)!r}"
                    for name, choices in (("arch", ARCHS), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                                          ("mixed_precision", PRECISIONS), ("export_layout", LAYOUTS),
                                          ("skip_scaling", SKIP_SCALINGS), ("normalization", NORMALIZATIONS))
                    if getattr(self, name) not in choices]
        if self.normalization and self.backbone_weights not in ("", "none") and self.normalization != "caffe":
            problems.append(f"normalization {self.normalization!r} contradicts the backbone weights "
                            f"{self.backbone_weights!r}: VGG16's ImageNet weights expect 'caffe'")
        if self.image_size < 32:
            problems.append(f"image_size must be at least 32 (the FCN's stride), got {self.image_size}")
        for name in ("batch_size", "epochs", "fc_units"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps < 0 or self.steps_per_epoch < 0:
            problems.append("max_steps and steps_per_epoch must be 0 (no limit) or positive")
        if not 0 < self.width <= 4 or self.learning_rate <= 0:
            problems.append("width must be in (0, 4] and learning_rate positive")
        if not 0 < self.min_scale <= self.max_scale:
            problems.append(f"need 0 < min_scale <= max_scale, got {self.min_scale} and {self.max_scale}")
        if not 0 <= self.class_weight_power <= 2:
            problems.append(f"class_weight_power must be in [0, 2], got {self.class_weight_power}")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ValueError("; ".join(problems))


PRESETS = {
    # Trains on a 2-core laptop CPU in minutes on small images (the demo and the smoke tests):
    # 1/8 of VGG16's channels, 128-wide fc6/fc7, no pretrained weights. Trained from scratch, the
    # plain 15-layer net needs BatchNorm and unscaled skips to learn in a few hundred steps
    # (measured: 0.88 val mean IoU on the demo world after 100 steps; without them, 0.20).
    "tiny": dict(backbone_weights="none", width=0.125, fc_units=128, image_size=128, batch_size=8,
                 optimizer="adam", learning_rate=5e-3, weight_decay=0.0, schedule="cosine", dropout=0.1,
                 min_scale=0.75, max_scale=1.25, epochs=20, batch_norm=True, skip_scaling="none"),
    # Real photos from scratch on a laptop CPU (CamVid's 480x360 driving frames: docs/camvid.md).
    # The paper's FCN-8s topology (VGG16 blocks, fc6 7x7, skips from pool3/pool4/fc7) with:
    # - width 0.25 (16..128 channels) and 512-wide fc6/fc7: 4.4 M parameters, 4.7 crops/s on 2 cores
    #   (measured: width 0.5 gives 2.0/s), so two hours are ~90 passes over CamVid's 367 frames; a
    #   from-scratch net needs many passes more than it needs width;
    # - BatchNorm and unscaled skips, which a from-scratch VGG needs to learn at all (the tiny preset);
    # - 320x320 crops at scale 0.75-1.5 of the full frame: most of a frame's context, and thin
    #   objects (poles, signs) stay a few pixels wide, as they are at evaluation (scale 1);
    # - AdamW 2e-3 with poly decay and light weight decay, steady from the first step without warm-up;
    # - damped median-frequency class weights ((median/freq)^0.5: pole 2.2, bicyclist 3.9, road
    #   0.4), about ENet's 1/ln(1.02 + p) ratio: rare thin classes count without flooding the frame;
    # - dropout 0.2 in fc6/fc7 (512 units need less than VGG's 4096 at 0.5).
    "camvid": dict(backbone_weights="none", width=0.25, fc_units=512, image_size=320, batch_size=8,
                   optimizer="adam", learning_rate=2e-3, weight_decay=1e-2, schedule="poly", dropout=0.2,
                   min_scale=0.75, max_scale=1.5, epochs=100, steps_per_epoch=100, batch_norm=True,
                   skip_scaling="none", class_weights=True),
    "paper": {},
}


DESCRIPTION = "Train an FCN on segmentation TFRecords."


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segpipe train", description=DESCRIPTION,
                                     epilog="Every TrainConfig field is a flag; --config picks the preset "
                                            "the unset ones come from (docs/model.md).")
    parser.add_argument("--train_data", required=True, type=location,
                        help="a dataset folder (its manifest's train split) or a glob of shards (local or gs://)")
    parser.add_argument("--val_data", default="",
                        help="a dataset folder (its val split) or a glob of shards; enables best-model selection")
    parser.add_argument("--model_dir", required=True, type=location)
    parser.add_argument("--progress", type=int, choices=(0, 1, 2), default=1,
                        help="Keras's progress output: 0 none, 1 a live bar (a terminal), 2 one line per epoch (logs)")
    parser.add_argument("--config", choices=sorted(PRESETS), default="paper",
                        help="preset of defaults; flags given explicitly override it")
    for field in dataclasses.fields(TrainConfig):
        kind = {"bool": lambda v: v.lower() in ("1", "true", "yes")}.get(field.type, None) or \
            {"int": int, "float": float, "str": str}[field.type]
        parser.add_argument(f"--{field.name}", type=kind, default=None, help=f"default {field.default!r}")
    return parser


def location(value: str) -> str:
    """A flag naming a file, folder or glob: not empty, not a bare scheme such as ``gs://``."""
    if not value.strip() or value.rstrip("/").endswith(":/") or value.endswith(":"):
        raise argparse.ArgumentTypeError(f"{value!r} names no file or folder")
    return value


def config_from_args(args) -> TrainConfig:
    values = dict(PRESETS[args.config])
    values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                   if getattr(args, f.name) is not None})
    return TrainConfig(**values)
