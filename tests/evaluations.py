"""A ModelEvaluation with only the numbers format selection reads, for the selection tests."""

from slipway.evaluation.evaluate import ModelEvaluation


def evaluation(fmt: str, accuracy: float, throughput: float, p99: float = 1.0) -> ModelEvaluation:
    return ModelEvaluation(
        role="student",
        format=fmt,
        runtime="onnxruntime",
        params=10,
        size_bytes=1000,
        accuracy=accuracy,
        macro_f1=accuracy,
        per_class_accuracy=[],
        confusion_matrix=[],
        latency_ms_p50_b1=p99 / 2,
        latency_ms_p99_b1=p99,
        throughput_ips_b64=throughput,
    )
