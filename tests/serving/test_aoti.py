"""The AOTInductor format end to end on one real compile (module fixture, ~30-45 s on 2 cores): the package and
its metadata, parity against eager, a dynamic batch, the Triton Python-backend folder (model.py run with a test
double of triton_python_backend_utils), `slipway serve` in a subprocess answering tritonclient over HTTP and gRPC,
and the refusals (tampered bytes, another torch release, another device).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serving_helpers import INPUT_SHAPE, digits_cnn

from slipway.cluster.kserve import ResourceSettings, build_inference_service
from slipway.compression.aoti import aoti_predictor, check_aoti_parity, compile_aoti
from slipway.core.aoti_package import check_serving_compatibility
from slipway.core.artifacts import read_metadata, write_metadata
from slipway.core.config import SlipwayConfig, TritonConfig
from slipway.core.errors import ArtifactIntegrityError, ConfigError, ExportError, TritonConfigError
from slipway.serving.loader import load_model_dir
from slipway.serving.server import start_server
from slipway.serving.triton_repository import read_model_config, write_model
from slipway.steps.deploy import check_aoti_target

MODEL = "digits_aoti"


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("aoti") / "student.pt2"
    compile_aoti(digits_cnn(), INPUT_SHAPE, path)
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, package: Path) -> Path:
    root = tmp_path_factory.mktemp("aoti-repo") / "repo"
    write_model(root, MODEL, package, TritonConfig(max_batch_size=64, max_queue_delay_us=2000))
    return root


def _batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *INPUT_SHAPE)).astype(np.float32)


def _eager(x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return digits_cnn()(torch.from_numpy(x)).numpy()


def test_package_metadata_parity_and_dynamic_batch(package: Path) -> None:
    meta = read_metadata(package)
    assert (meta.framework, meta.precision, meta.torch_version) == ("aoti", "fp32", torch.__version__)
    assert meta.compute_capability is None and meta.extra["device"] == "cpu"
    assert [(t.name, t.shape) for t in meta.inputs] == [("input", [-1, *INPUT_SHAPE])]
    assert [(t.name, t.shape) for t in meta.outputs] == [("logits", [-1, 10])]
    embedded = torch._inductor.aoti_load_package(str(package)).get_metadata()
    assert embedded["slipway.torch_version"] == torch.__version__ and embedded["slipway.device"] == "cpu"
    parity = check_aoti_parity(digits_cnn(), package, _batch(300))
    assert parity.max_abs_diff < 1e-4 and parity.top1_agreement == 1.0
    predict = aoti_predictor(package)
    for n in (1, 7, 129):  # batch sizes the example (2) never had
        np.testing.assert_allclose(predict(_batch(n, n)), _eager(_batch(n, n)), atol=1e-4)


def test_parity_check_fails_against_another_model(package: Path) -> None:
    torch.manual_seed(1)
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    with pytest.raises(ExportError, match=r"parity check failed.*max abs logit difference"):
        check_aoti_parity(other, package, _batch(64))


def test_reduced_precision_is_gpu_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="precision 'fp16' compiles for CUDA only"):
        compile_aoti(digits_cnn(), INPUT_SHAPE, tmp_path / "m.pt2", precision="fp16")


def test_repository_folder_is_a_python_backend_model(repo: Path) -> None:
    config = read_model_config(repo / MODEL)
    assert config.backend == "python" and not config.platform and not config.default_model_filename
    assert config.max_batch_size == 64 and config.HasField("dynamic_batching")
    assert [g.kind for g in config.instance_group] == [config.instance_group[0].KIND_CPU]
    version = repo / MODEL / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.pt2", "model.pt2.meta.json", "model.py"]


class _FakePbUtils(types.ModuleType):
    """Test double of Triton's triton_python_backend_utils: the calls model.py makes, recorded as plain data."""

    class TritonModelException(Exception):
        pass

    class TritonError:
        def __init__(self, message: str) -> None:
            self.message = message

    class Tensor:
        def __init__(self, name: str, array: np.ndarray) -> None:
            self.name, self.array = name, array

        def as_numpy(self) -> np.ndarray:
            return self.array

    class InferenceResponse:
        def __init__(self, output_tensors: list[Any], error: Any = None) -> None:
            self.output_tensors, self.error = output_tensors, error

    class InferenceRequest:
        def __init__(self, inputs: list[Any]) -> None:
            self.inputs = inputs

    @staticmethod
    def get_input_tensor_by_name(request: Any, name: str) -> Any:
        return next((t for t in request.inputs if t.name == name), None)


@pytest.fixture
def triton_model(repo: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, _FakePbUtils]:
    fake = _FakePbUtils("triton_python_backend_utils")
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    spec = importlib.util.spec_from_file_location("aoti_model_py", repo / MODEL / "1" / "model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TritonPythonModel(), fake


def test_generated_model_py_runs_a_batch_of_requests(repo: Path, triton_model: tuple[Any, Any]) -> None:
    model, pb = triton_model
    model.initialize(
        {"model_repository": str(repo / MODEL), "model_version": "1", "model_instance_kind": "CPU"}
    )
    x = [_batch(3, 1), _batch(1, 2), _batch(5, 3)]
    responses = model.execute([pb.InferenceRequest([pb.Tensor("input", a)]) for a in x])
    assert [r.error for r in responses] == [None, None, None]
    for r, a in zip(responses, x, strict=True):
        assert r.output_tensors[0].name == "logits"
        np.testing.assert_allclose(r.output_tensors[0].as_numpy(), _eager(a), atol=1e-4)
    bad = model.execute([pb.InferenceRequest([pb.Tensor("input", np.zeros((2, 3), np.float32))])])
    assert bad[0].error is not None and "failed on this batch" in bad[0].error.message


def test_generated_model_py_refuses_tampered_package(
    repo: Path, tmp_path: Path, triton_model: tuple[Any, Any]
) -> None:
    model, pb = triton_model
    version = tmp_path / "1"
    version.mkdir()
    (version / "model.pt2").write_bytes((repo / MODEL / "1" / "model.pt2").read_bytes()[:-10])
    (version / "model.pt2.meta.json").write_text((repo / MODEL / "1" / "model.pt2.meta.json").read_text())
    with pytest.raises(pb.TritonModelException, match="does not match its metadata"):
        model.initialize({"model_repository": str(tmp_path), "model_version": "1"})


def test_slipway_serve_answers_tritonclient_over_http_and_grpc(repo: Path) -> None:
    with start_server(repo, threads=1, subprocess_mode=True) as server:
        http = httpclient.InferenceServerClient(server.url.removeprefix("http://"))
        config = http.get_model_config(MODEL)
        assert config["backend"] == "python" and config["max_batch_size"] == 64
        for n in (1, 16):
            x = _batch(n, 10 + n)
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            out = http.infer(MODEL, [inp]).as_numpy("logits")
            np.testing.assert_allclose(out, _eager(x), atol=1e-4)
        grpc = grpcclient.InferenceServerClient(server.grpc_url.removeprefix("grpc://"))
        x = _batch(9, 99)
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        np.testing.assert_allclose(grpc.infer(MODEL, [inp]).as_numpy("logits"), _eager(x), atol=1e-4)
        grpc.close()
        http.close()


def _copy_version(repo: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "repo"
    shutil.copytree(repo, target)
    return target / MODEL


def test_loader_refuses_tampered_package_and_other_torch(repo: Path, tmp_path: Path) -> None:
    model_dir = _copy_version(repo, tmp_path)
    package = model_dir / "1" / "model.pt2"
    meta = read_metadata(package)
    write_metadata(package, meta.model_copy(update={"torch_version": "2.11.0+cu128"}))
    with pytest.raises(ConfigError, match=r"compiled with torch 2\.11\.0\+cu128, but .* runs torch 2\.13"):
        load_model_dir(model_dir)
    write_metadata(package, meta)
    package.write_bytes(package.read_bytes() + b"x")
    with pytest.raises(ArtifactIntegrityError, match="does not match metadata"):
        load_model_dir(model_dir)
    package.unlink()
    (model_dir / "1" / "model.pt2.meta.json").unlink()
    with pytest.raises(TritonConfigError, match=r"cannot run in slipway serve without a Slipway AOTInductor"):
        load_model_dir(model_dir)


def test_serving_compatibility_names_both_sides(package: Path) -> None:
    meta = read_metadata(package)
    check_serving_compatibility(meta, "2.13.0+cu128", None, "image X")  # same release, CPU: fine
    with pytest.raises(ConfigError, match=r"torch 2\.13\.0\+cpu, but image X runs torch 2\.12\.1"):
        check_serving_compatibility(meta, "2.12.1", None, "image X")
    with pytest.raises(
        ConfigError, match=r"compiled for the CPU, but image X serves on CUDA compute capability 9\.0"
    ):
        check_serving_compatibility(meta, torch.__version__, "9.0", "image X")
    gpu = meta.model_copy(update={"compute_capability": "8.0"})
    with pytest.raises(
        ConfigError, match=r"capability 8\.0, but image X serves on CUDA compute capability 9\.0"
    ):
        check_serving_compatibility(gpu, torch.__version__, "9.0", "image X")
    assert json.loads(package.with_name(package.name + ".meta.json").read_text())["framework"] == "aoti"


def _target(target: str) -> SlipwayConfig:
    cfg = SlipwayConfig()
    return cfg.model_copy(update={"deploy": cfg.deploy.model_copy(update={"target": target})})


def test_deploy_refuses_a_package_the_serving_side_cannot_run(repo: Path, tmp_path: Path) -> None:
    check_aoti_target(_target("local"), repo, MODEL)  # compiled here, served here
    model_dir = _copy_version(repo, tmp_path)
    package = model_dir / "1" / "model.pt2"
    meta = read_metadata(package)
    write_metadata(package, meta.model_copy(update={"torch_version": "2.12.0"}))
    with pytest.raises(ConfigError, match=r"compiled with torch 2\.12\.0, but this machine runs torch 2\.13"):
        check_aoti_target(_target("local"), model_dir.parent, MODEL)
    # In the cluster the InferenceService builder checks the package against the Triton-with-torch image.
    write_metadata(package, meta.model_copy(update={"compute_capability": "8.0"}))
    other_gpu = check_aoti_target(_target("kserve"), model_dir.parent, MODEL)
    with pytest.raises(
        ConfigError, match=r"compute capability 8\.0, but the serving image .* capability 9\.0"
    ):
        build_inference_service(
            "digits-pt2", "ns", "s3://b/repo", "aoti", artifact=other_gpu, resources=ResourceSettings(gpu=1)
        )
    write_metadata(package, meta)  # compiled here, for the CPU, by the image's torch release
    served = check_aoti_target(_target("kserve"), model_dir.parent, MODEL)
    body = build_inference_service("digits-pt2", "ns", "s3://b/repo", "aoti", artifact=served)
    assert body["spec"]["predictor"]["model"]["runtime"] == "slipway-triton-torch"
    assert check_aoti_target(_target("none"), model_dir.parent, MODEL) is None
