"""Dynamic batching really gathers concurrent requests into one execution; direct models never batch."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import onnxruntime as ort
import tritonclient.http as triton_http
from serving_helpers import images

from slipway.serving.server import ServerHandle


def _fire(server: ServerHandle, model: str, n: int) -> list[np.ndarray]:
    def one(i: int) -> np.ndarray:
        client = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
        x = images(1, seed=100 + i)
        tensor = triton_http.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.infer(model, [tensor]).as_numpy("logits")

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_concurrent_requests_are_batched_and_split_correctly(
    server: ServerHandle, reference: ort.InferenceSession
) -> None:
    before = httpx.get(f"{server.url}/v2/models/digits/stats").json()["model_stats"][0]
    outs = _fire(server, "digits", 16)
    after = httpx.get(f"{server.url}/v2/models/digits/stats").json()["model_stats"][0]
    for i, out in enumerate(outs):  # each caller got its own row back
        expected = reference.run(["logits"], {"input": images(1, seed=100 + i)})[0]
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    executions = after["execution_count"] - before["execution_count"]
    assert after["inference_count"] - before["inference_count"] == 16
    assert executions < 16, "with a 2 ms queue delay, 16 concurrent requests must share executions"
    assert max(b["batch_size"] for b in after["batch_stats"]) > 1


def test_model_without_dynamic_batching_runs_requests_alone(server: ServerHandle) -> None:
    before = httpx.get(f"{server.url}/v2/models/direct/stats").json()["model_stats"][0]
    _fire(server, "direct", 8)
    after = httpx.get(f"{server.url}/v2/models/direct/stats").json()["model_stats"][0]
    assert after["execution_count"] - before["execution_count"] == 8
    assert {b["batch_size"] for b in after["batch_stats"]} <= {1, 4}  # 4: the batch-4 request of another test
