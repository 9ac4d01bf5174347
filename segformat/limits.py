"""Limits shared by every job that decodes an image (no imports: the command line reads them)."""

# Pillow's own decompression-bomb threshold (PIL.Image.MAX_IMAGE_PIXELS, 89,478,485 px; Pillow
# warns above it and refuses above twice it). We refuse above it: no real photo or label raster in
# this field needs ~90 megapixels in one file, and a bomb of that size costs gigabytes once decoded;
# --max_image_pixels raises it. Written out here so the command line loads without Pillow; a test
# checks it against Pillow's.
DEFAULT_MAX_PIXELS = 89_478_485
