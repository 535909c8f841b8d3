"""Compression: pruning, ONNX export and parity, INT8/FP16 quantization, TensorRT engines, format selection.

A domain package: imports slipway.core and sibling domain packages (training, evaluation); never steps or above.
"""
