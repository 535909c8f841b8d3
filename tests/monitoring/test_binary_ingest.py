"""Triton's binary tensor extension over real HTTP: tritonclient's bodies are captured like their JSON form.

Request bodies come from tritonclient's own encoder (`InferInput.set_data_from_numpy(binary_data=True)`,
`InferenceServerClient.generate_request_body`); response bodies are checked with its decoder, so the format
under test is the one Triton clients and servers send.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton_http
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import monitoring as bench
from slipway.monitoring.events import decode_payload
from slipway.monitoring.store import Record, SegmentStore, iter_records_newest_first
from slipway.monitoring.window import collect_window

from .conftest import RunningMonitor, Split, binary_headers, start, triton_request, v2_request, v2_response

V2_SOURCE = "http://digits-predictor.models/v2/models/digits/versions/3/infer"


def triton_response(probs: np.ndarray, name: str = "probs") -> tuple[bytes, int]:
    """A binary response body as Triton answers a binary request (`model_name`, `model_version` included)."""
    blob = probs.astype(np.float32).tobytes()
    header = json.dumps(
        {
            "model_name": "digits",
            "model_version": "3",
            "outputs": [
                {
                    "name": name,
                    "datatype": "FP32",
                    "shape": list(probs.shape),
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
        }
    ).encode()
    body = header + blob
    parsed = triton_http.InferenceServerClient.parse_response_body(body, header_length=len(header))
    np.testing.assert_array_equal(parsed.as_numpy(name), probs.astype(np.float32))  # a body Triton could send
    return body, len(header)


def ce_headers(event_id: str, kind: str = "request", **extra: str) -> dict[str, str]:
    """KServe payload-logger headers for a binary body (it forwards the body, not its length header)."""
    return {**binary_headers(event_id, kind), "content-type": "application/octet-stream", **extra}


def stored(data_dir: Path, key: str) -> list[dict]:
    """The stored records with `key`, decoded (header fields plus the v2 body)."""
    out = []
    for record in iter_records_newest_first(data_dir):
        if record.key == key:
            header, body = decode_payload(record.payload)
            out.append({**header, "body": body})
    return out


def tensors(body: dict, key: str) -> list[tuple[str, list[int], str, np.ndarray]]:
    return [(t["name"], t["shape"], t["datatype"], np.asarray(t["data"], np.float32)) for t in body[key]]


def same_tensors(a: dict, b: dict, key: str) -> None:
    for (na, sa, da, xa), (nb, sb, db, xb) in zip(tensors(a, key), tensors(b, key), strict=True):
        assert (na, sa, da) == (nb, sb, db)
        np.testing.assert_array_equal(xa, xb)


def listed(client: httpx.Client, event_id: str, limit: int = 50) -> list[dict]:
    events = client.get("/v1/events", params={"limit": limit}).json()["events"]
    return [e for e in events if e["id"] == event_id]


def test_tritonclient_body_on_events_matches_json_form(
    client: httpx.Client, monitor: RunningMonitor, digits: Split
) -> None:
    """Captured once, the same rows as the JSON form, model name/version from the v2 path in ce-source."""
    x = digits.pool_x[:3]
    as_json = client.post("/events", content=json.dumps(v2_request(x)), headers=binary_headers("ev-json"))
    assert as_json.status_code == 200, as_json.text
    body, _ = triton_request(x)
    headers = ce_headers("ev-bin", **{"ce-source": V2_SOURCE})
    first = client.post("/events", content=body, headers=headers)
    assert first.status_code == 200 and first.json()["stored"] == 1, first.text
    retry = client.post("/events", content=body, headers=headers)
    assert retry.json()["duplicates"] == 1

    (binary,) = stored(monitor.data_dir, "request:ev-bin")
    (plain,) = stored(monitor.data_dir, "request:ev-json")
    same_tensors(binary["body"], plain["body"], "inputs")
    np.testing.assert_array_equal(tensors(binary["body"], "inputs")[0][3].reshape(x.shape), x)
    assert (binary["model_name"], binary["model_version"]) == ("digits", "3")
    assert (plain["model_name"], plain["model_version"]) == ("digits", None)  # ce-inferenceservicename only
    (entry,) = listed(client, "ev-bin")
    assert entry["kind"] == "request" and entry["model_name"] == "digits" and entry["model_version"] == "3"


def test_header_length_sent_explicitly_and_binary_response(
    client: httpx.Client, monitor: RunningMonitor, digits: Split
) -> None:
    """A forwarder that keeps Inference-Header-Content-Length; a Triton binary response names its model."""
    x = digits.pool_x[3:5]
    probs = digits.probs(x)
    body, header_length = triton_request(x)
    headers = ce_headers("ev-len", **{"inference-header-content-length": str(header_length)})
    assert client.post("/events", content=body, headers=headers).json()["stored"] == 1
    response, _ = triton_response(probs)
    r = client.post("/events", content=response, headers=ce_headers("ev-len", "response"))
    assert r.status_code == 200 and r.json() == {
        "stored": 1,
        "duplicates": 0,
        "id": "ev-len",
        "kind": "response",
    }

    (req,) = stored(monitor.data_dir, "request:ev-len")
    (resp,) = stored(monitor.data_dir, "response:ev-len")
    np.testing.assert_array_equal(tensors(req["body"], "inputs")[0][3].reshape(x.shape), x)
    np.testing.assert_array_equal(tensors(resp["body"], "outputs")[0][3].reshape(probs.shape), probs)
    assert (resp["model_name"], resp["model_version"]) == ("digits", "3")  # from the response body
    window = collect_window(monitor.data_dir, 2)  # joined by id like JSON events: the drift window sees both
    np.testing.assert_array_equal(window.x, x)
    assert window.probs is not None
    np.testing.assert_array_equal(window.probs, probs)


@pytest.mark.parametrize("explicit_length", [True, False])
def test_tritonclient_body_on_batches_matches_json_form(
    client: httpx.Client, monitor: RunningMonitor, digits: Split, explicit_length: bool
) -> None:
    x = digits.pool_x[5:9]
    tag = "len" if explicit_length else "nolen"
    plain = client.post("/v1/batches", json={"id": f"b-json-{tag}", **v2_request(x)})
    assert plain.status_code == 200, plain.text
    body, header_length = triton_request(x, request_id=f"b-bin-{tag}")
    headers = {"content-type": "application/octet-stream"}
    if explicit_length:
        headers["inference-header-content-length"] = str(header_length)
    query = {"model_name": "digits", "model_version": "7"}
    r = client.post("/v1/batches", content=body, headers=headers, params=query)
    assert r.status_code == 200 and r.json() == {"stored": 1, "duplicates": 0, "ids": [f"b-bin-{tag}"]}, (
        r.text
    )
    assert client.post("/v1/batches", content=body, headers=headers, params=query).json()["duplicates"] == 1

    (binary,) = stored(monitor.data_dir, f"request:b-bin-{tag}")
    (json_form,) = stored(monitor.data_dir, f"request:b-json-{tag}")
    same_tensors(binary["body"], json_form["body"], "inputs")
    assert (binary["model_name"], binary["model_version"]) == ("digits", "7")
    assert (json_form["model_name"], json_form["model_version"]) == (None, None)  # nobody said which model
    (entry,) = listed(client, f"b-bin-{tag}")
    assert entry["model_version"] == "7" and entry["source"] == "v2-batch"


def test_batch_fields_name_the_model_and_json_with_header_length(
    client: httpx.Client, monitor: RunningMonitor, digits: Split
) -> None:
    """Fields in the body win over the query; `application/json` with the length header is binary too."""
    x = digits.pool_x[9:11]
    tensor = triton_http.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    requested = [triton_http.InferRequestedOutput("probs", binary_data=True)]  # outputs to return: no tensors
    body, header_length = triton_http.InferenceServerClient.generate_request_body(
        [tensor], outputs=requested, request_id="b-fields"
    )
    header = json.loads(body[:header_length])
    header.update(model_name="digits-v2", model_version="2")
    head = json.dumps(header).encode()
    body = head + body[header_length:]
    headers = {"content-type": "application/json", "inference-header-content-length": str(len(head))}
    r = client.post("/v1/batches", content=body, headers=headers, params={"model_name": "ignored"})
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    (rec,) = stored(monitor.data_dir, "request:b-fields")
    assert (rec["model_name"], rec["model_version"]) == ("digits-v2", "2")
    assert not stored(monitor.data_dir, "response:b-fields")


def _good_event(client: httpx.Client, x: np.ndarray, event_id: str) -> None:
    """A well-formed binary event right after a refused one is captured: the server kept serving."""
    body, _ = triton_request(x)
    r = client.post("/events", content=body, headers=ce_headers(event_id, **{"ce-source": V2_SOURCE}))
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    (entry,) = listed(client, event_id, limit=5)
    assert entry["model_name"] == "digits" and entry["model_version"] == "3"


def _with_header(mutate) -> tuple[bytes, str]:
    """Apply `mutate` to the JSON header of a valid 2x4 FP32 binary request; body and new header length."""
    body, header_length = triton_request(np.ones((2, 4), np.float32))
    header = json.loads(body[:header_length])
    mutate(header["inputs"][0])
    head = json.dumps(header).encode()
    return head + body[header_length:], str(len(head))


def _bad_bodies() -> list:
    """(case, body, extra headers, what the 400 must name) for malformed binary bodies."""
    body, n = triton_request(np.ones((2, 4), np.float32))
    length = "inference-header-content-length"
    cases: list[tuple[str, bytes, dict[str, str | bytes], str]] = [
        ("length-beyond-body", body, {length: str(len(body) + 1)}, "Inference-Header-Content-Length"),
        ("length-inf", body, {length: "inf"}, "Inference-Header-Content-Length"),
        ("length-nan", body, {length: "nan"}, "Inference-Header-Content-Length"),
        ("length-negative", body, {length: "-1"}, "Inference-Header-Content-Length"),
        ("length-exponent", body, {length: "1e2"}, "Inference-Header-Content-Length"),
        ("length-superscript", body, {length: b"\xb2"}, "Inference-Header-Content-Length"),
        ("length-huge", body, {length: "9" * 5000}, "Inference-Header-Content-Length"),
        ("length-cuts-json", body, {length: str(n - 5)}, "JSON header"),
        ("length-short", body, {length: str(n + 4)}, "JSON header"),
        ("trailing-bytes", body + b"\x00" * 4, {}, "belong to no tensor"),
        ("truncated-data", body[:-4], {}, "binary_data_size"),
        ("not-json-at-all", b"\x00\x01binary", {}, "not valid JSON"),
    ]
    mutations = {
        "size-mismatch": (lambda t: t["parameters"].update(binary_data_size=28), "binary_data_size"),
        "size-negative": (lambda t: t["parameters"].update(binary_data_size=-32), "binary_data_size"),
        "size-not-int": (lambda t: t["parameters"].update(binary_data_size="32"), "binary_data_size"),
        "size-beyond": (lambda t: t["parameters"].update(binary_data_size=64), "binary_data_size"),
        "shape-mismatch": (lambda t: t.update(shape=[2, 3]), "binary_data_size"),
        "datatype-unknown": (lambda t: t.update(datatype="FP99"), "datatype"),
        "datatype-bytes": (lambda t: t.update(datatype="BYTES"), "datatype"),
        "datatype-bf16": (lambda t: t.update(datatype="BF16"), "datatype"),
        "data-and-binary": (lambda t: t.update(data=[1] * 8), "not both"),
        "parameters-list": (lambda t: t.update(parameters=[32]), "parameters"),
    }
    for case, (mutate, named) in mutations.items():
        mutated, head = _with_header(mutate)
        cases.append((case, mutated, {length: head}, named))
    nan = np.ones((2, 4), np.float32)
    nan[1, 2] = np.nan
    cases.append(("nan-values", triton_request(nan)[0], {}, "NaN"))
    return [pytest.param(*case, id=case[0]) for case in cases]


@pytest.mark.parametrize("path", ["/events", "/v1/batches"])
@pytest.mark.parametrize(("case", "body", "extra", "named"), _bad_bodies())
def test_malformed_binary_body_is_400_and_next_is_captured(
    client: httpx.Client,
    digits: Split,
    path: str,
    case: str,
    body: bytes,
    extra: dict[str, str | bytes],
    named: str,
) -> None:
    if path == "/events":
        headers: dict[str, str | bytes] = {**ce_headers(f"bad-{case}"), **extra}
    else:
        headers = {"content-type": "application/octet-stream", **extra}
    r = client.post(path, content=body, headers=headers)
    assert r.status_code == 400, (r.status_code, r.text)
    assert named in r.json()["message"], r.json()
    assert not listed(client, f"bad-{case}", limit=20)
    _good_event(client, digits.pool_x[:1], f"good-after-{case}-{path.strip('/').replace('/', '-')}")


@pytest.mark.parametrize(
    ("params", "named"),
    [({"model_name": "a\x01b"}, "query.model_name"), ({"model_version": ""}, "query.model_version")],
)
def test_bad_model_query_is_400(client: httpx.Client, params: dict[str, str], named: str) -> None:
    body, _ = triton_request(np.ones((1, 4), np.float32))
    r = client.post(
        "/v1/batches", content=body, headers={"content-type": "application/octet-stream"}, params=params
    )
    assert r.status_code == 400 and named in r.json()["message"]


def test_list_events_limit_is_checked(client: httpx.Client) -> None:
    for bad in ("0", "10001", "x", "²", "9" * 5000):
        r = client.get("/v1/events", params={"limit": bad})
        assert r.status_code == 400 and "limit" in r.json()["message"], bad
    assert client.get("/v1/window", params={"size": "9" * 5000}).status_code == 400


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    header_length=st.none()
    | st.integers(-5, 400).map(str)
    # h11 refuses to send a header value with outer whitespace: those never reach a server.
    | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8).filter(
        lambda s: s == s.strip()
    ),
    size=st.none() | st.integers(-8, 80) | st.text(max_size=3),
    datatype=st.sampled_from(["FP32", "FP16", "INT64", "BOOL", "UINT8", "BYTES", "x"]),
    shape=st.lists(st.integers(-1, 5), min_size=0, max_size=3),
    tail=st.binary(max_size=64),
    path=st.sampled_from(["/events", "/v1/batches"]),
)
def test_fuzz_binary_bodies_never_500(
    monitor: RunningMonitor,
    header_length: str | None,
    size: object,
    datatype: str,
    shape: list[int],
    tail: bytes,
    path: str,
) -> None:
    tensor = {"name": "x", "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}}
    head = orjson.dumps({"id": "fuzz-bin", "inputs": [tensor]})
    headers = ce_headers("fuzz-bin") if path == "/events" else {"content-type": "application/octet-stream"}
    if header_length is not None:
        headers["inference-header-content-length"] = header_length
    with httpx.Client(base_url=monitor.url, timeout=30) as c:
        r = c.post(path, content=head + tail, headers=headers)
    assert r.status_code in {200, 400, 413}, (r.status_code, r.text)


def test_store_written_before_model_fields_opens_and_reads(tmp_path: Path, digits: Split) -> None:
    """Records in the old header format read back with null model fields; new records carry them."""
    data_dir = tmp_path / "data"
    store = SegmentStore(data_dir)
    x = digits.pool_x[:2]
    old_header = orjson.dumps({"k": "request", "id": "old-1", "t": 1.0, "src": "http://isvc/"})
    store.append([Record("request:old-1", old_header + b"\n" + json.dumps(v2_request(x)).encode())])
    old_response = orjson.dumps({"k": "response", "id": "old-1", "t": 1.0, "src": "http://isvc/"})
    body = json.dumps(v2_response(digits.probs(x))).encode()
    store.append([Record("response:old-1", old_response + b"\n" + body)])
    store.close()

    running = start(data_dir, extra=["--drift-every", "0"])
    try:
        with httpx.Client(base_url=running.url, timeout=30) as c:
            events = {(e["id"], e["kind"]): e for e in c.get("/v1/events").json()["events"]}
            old = events[("old-1", "request")]
            assert (
                old["model_name"] is None and old["model_version"] is None and old["source"] == "http://isvc/"
            )
            new_body, _ = triton_request(x)
            r = c.post("/events", content=new_body, headers=ce_headers("new-1", **{"ce-source": V2_SOURCE}))
            assert r.status_code == 200, r.text
            (new,) = listed(c, "new-1")
            assert (new["model_name"], new["model_version"]) == ("digits", "3")
            window = np.load(io.BytesIO(c.get("/v1/window", params={"size": 4}).content))
            np.testing.assert_array_equal(window["x"], np.concatenate([x, x]))
            assert list(window["ids"]) == ["old-1", "old-1", "new-1", "new-1"]
    finally:
        bench.stop_monitor(running.proc)  # type: ignore[arg-type]
