"""Training configuration: one dataclass, each default with its reason, and named presets."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
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
    mixed_precision: str = "auto"  # auto: mixed_float16 on GPU, float32 on CPU
    export_layout: str = "nhwc"  # 'nchw' adds the torchvision-style {'out': [N, C, H, W]} output
    seed: int = 0
    # Off: bit-for-bit repeatable runs need ordered input (each batch waits for its slowest
    # example) and TensorFlow's deterministic kernels, slower on GPU. On: same seed, same data and
    # hardware -> the same weights (for debugging and for comparing changes without noise).
    deterministic: bool = False


PRESETS = {
    # Trains on a 2-core laptop CPU in minutes on small images (the demo and the smoke tests):
    # 1/8 of VGG16's channels, 128-wide fc6/fc7, no pretrained weights. Trained from scratch, the
    # plain 15-layer net needs BatchNorm and unscaled skips to learn in a few hundred steps
    # (measured: 0.88 val mean IoU on the demo world after 100 steps; without them, 0.20).
    "tiny": dict(backbone_weights="none", width=0.125, fc_units=128, image_size=128, batch_size=8,
                 optimizer="adam", learning_rate=5e-3, weight_decay=0.0, schedule="cosine", dropout=0.1,
                 min_scale=0.75, max_scale=1.25, epochs=20, batch_norm=True, skip_scaling="none"),
    "paper": {},
}
