"""Beam jobs: dataset conversion (COCO, image+mask pairs) and batch segmentation."""
