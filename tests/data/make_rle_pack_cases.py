"""The RGBA arrays behind label_studio_rle_pack.json (encoded by rle_pack_encode.mjs):
    python tests/data/make_rle_pack_cases.py > cases.json"""
import json

import numpy as np

rng = np.random.default_rng(20261201)
cases = []
# a brush stroke with anti-aliased edges: alpha ramps at the border, RGB the label colour (literal blocks)
yy, xx = np.mgrid[:9, :12]
alpha = np.clip((4.5 - np.hypot(yy - 4, xx - 5.5)) * 128, 0, 255).astype(np.uint8)
rgba = np.stack([np.where(alpha > 0, 255, 0), np.where(alpha > 0, 128, 0), np.zeros_like(alpha), alpha], -1)
cases.append(("antialiased_stroke", rgba))
# noise: every pixel its own values, nearly all literal blocks
alpha = (rng.random((11, 13)) < 0.5) * rng.integers(1, 256, (11, 13))
cases.append(("noise", np.stack([rng.integers(0, 256, (11, 13)), rng.integers(0, 256, (11, 13)),
                                 np.zeros((11, 13), int), alpha], -1)))
# a region whose runs pass 256 and 65536 values, with a few single-pixel holes
alpha = np.zeros((180, 200), np.uint8)
alpha[20:170, 10:190] = 255
alpha.ravel()[rng.integers(20 * 200, 170 * 200, 4)] = 0
cases.append(("long_runs_with_holes", np.repeat(alpha[..., None], 4, -1)))
print(json.dumps([{"name": n, "height": a.shape[0], "width": a.shape[1], "rgba": a.astype(np.uint8).ravel().tolist()}
                  for n, a in cases]))
