"""The networks and export layouts ``segmodel.fcn`` builds, with no imports: the command line
lists them without loading TensorFlow."""

# FCN-32s, -16s and -8s (Long, Shelhamer & Darrell): the score upsampled from fc7 alone, with the
# pool4 skip, with the pool4 and pool3 skips.
ARCHS = ("fcn8s", "fcn16s", "fcn32s")
# nhwc: RGB 0..255 [N, H, W, 3] -> scores [N, H, W, C]; nchw: torchvision's {"out": [N, C, H, W]}.
LAYOUTS = ("nhwc", "nchw")
# What an exported model computes in at inference (segmodel.fcn.with_precision): bfloat16 runs
# the FCN ~2x faster on CPUs with AVX512-BF16 or AMX.
INFERENCE_PRECISIONS = ("float32", "bfloat16")
