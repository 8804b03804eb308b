"""An INT8 twin of a keypoint model's ONNX export: onnxruntime's static quantization.

    from facial_keypoints.keypoints.quantize import quantize_onnx
    quantize_onnx("keypoints.onnx", "keypoints.int8.onnx", calibration)  # (N, C, S, S) float32

The network's weights become signed 8-bit integers, one scale per output channel, and its
activations unsigned 8-bit integers, one scale per tensor, read from what the network computes
on ``calibration`` (face crops as the pipeline cuts them, from training faces: never the faces
that the result is measured on). The graph is onnxruntime's QDQ format, which its CPU kernels
run as integer convolutions (VNNI where the CPU has it). The ONNX file's description (the
checkpoint's SHA-256 and metadata, ``keypoints.export``) is copied over and marked
``precision: int8``, so ``keypoints.runtime`` takes the twin only for the checkpoint it was made
from. ``fkp-ship`` makes the shipped model's twin and keeps it only where its error on held-out
faces stays within ``INT8_TOLERANCE`` of the float model's (``training.ship``).

Needs the ``onnx`` package (``pip install 'facial-keypoints[train]'``); running the twin needs
onnxruntime alone.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from facial_keypoints.files import atomic_path
from facial_keypoints.keypoints.runtime import TRAIN_EXTRA, OnnxExportError

#: The operations quantized: the network's body. Its last convolution (which gives the heatmap
#: logits, whose softmax is read to sub-pixel precision) and the decoding after it stay float:
#: quantized too, they put the points four times further off (held-out NME 15.5 % against
#: 3.9 %).
BODY = ("Conv", "ConvTranspose", "MaxPool", "Add", "Relu")

#: How much worse (NME, in points of a percent) an INT8 twin may be than the float model on
#: each set of held-out faces for ``fkp-ship`` to ship it.
INT8_TOLERANCE = 0.05


class _Batches:
    """onnxruntime's ``CalibrationDataReader``: the calibration crops, a few at a time."""

    def __init__(self, name, crops, batch=16):
        self.name, self.crops, self.batch, self.at = name, crops, batch, 0

    def get_next(self):
        if self.at >= len(self.crops):
            return None
        part = self.crops[self.at:self.at + self.batch]
        self.at += self.batch
        return {self.name: np.ascontiguousarray(part, dtype=np.float32)}

    def rewind(self):
        self.at = 0


def quantize_onnx(src, dest, calibration) -> Path:
    """Write ``src``'s INT8 twin to ``dest`` (atomically), calibrated on ``calibration``
    (N, C, S, S) float32 crops in [0, 1]; returns ``dest``."""
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise OnnxExportError(f"quantizing needs the onnx package: {TRAIN_EXTRA}") from None
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or not len(calibration):
        raise ValueError(f"calibration: expected (N, C, S, S) crops, got {calibration.shape}")
    source = onnx.load(str(src))
    name = source.graph.input[0].name
    dest = Path(dest)
    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        # shape inference and graph clean-up first, as onnxruntime advises before quantizing
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantized = Path(work) / "int8.onnx"
        layers = [n for n in onnx.load(str(prepared)).graph.node if n.op_type in BODY]
        last = [n.name for n in layers if n.op_type in ("Conv", "ConvTranspose")][-1:]
        quantize_static(str(prepared), str(quantized), _Batches(name, calibration),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        op_types_to_quantize=list(BODY), nodes_to_exclude=last)
        model = onnx.load(str(quantized))
    del model.metadata_props[:]
    for prop in source.metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    model.metadata_props.add(key="precision", value="int8")
    with atomic_path(dest) as tmp:
        onnx.save(model, tmp)
    return dest
