"""``segpipe export``: an exported model in other runtimes' formats (the conversion:
``segmodel.formats``)."""
from __future__ import annotations

import argparse

DESCRIPTION = "MODEL/model.keras -> a SavedModel (TF Serving, Vertex AI), TFLite (phones, cars) or ONNX."
# SavedModel: TF Serving and Vertex AI prediction; TFLite: phones, cars, the edge; ONNX:
# onnxruntime, TensorRT and the other ONNX runtimes.
FORMATS = ("savedmodel", "tflite", "onnx")
TFLITE_PRECISIONS = ("float32", "float16")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segpipe export", description=DESCRIPTION)
    parser.add_argument("--model", required=True, help="MODEL folder with model.keras and classes.json (local or gs://)")
    parser.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    parser.add_argument("--output", required=True, help="the SavedModel's folder, or the .tflite or .onnx file")
    parser.add_argument("--precision", choices=TFLITE_PRECISIONS, default="float32",
                        help="TFLite weights: float16 halves the file (computes in float32 on most CPUs)")
    return parser
