"""`kpa predictor`'s GET /metrics after real inference requests, read back with prometheus-client's parser.

KServe's per-model stage histograms (decode, inference, encode) count the requests that got that far,
the batch-size histogram the model calls the dynamic batcher made, and the request counter every
inference answer by model and status — a client's 400 and a model's 500 included, an unknown model not.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from predictor_fixtures import PredictorProcess, save_torchscript, write_config, write_scale_model
from prometheus_client.parser import text_string_to_metric_families
from torch import nn

pytestmark = pytest.mark.timeout(120)

EAGER = 'parameters { key: "backend" value { string_value: "eager" } }\n'
STAGES = ("request_preprocess_seconds", "request_predict_seconds", "request_postprocess_seconds")


class Fragile(nn.Module):
    def forward(self, x):
        if bool((x < 0).any()):
            raise ValueError("negative values are not allowed")
        return x + 1


def v2(values: list[float], input_name: str = "x") -> dict:
    return {"inputs": [{"name": input_name, "datatype": "FP32", "shape": [1, len(values)], "data": values}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    write_scale_model(root, "scale", 1, 2.0)
    write_scale_model(root, "batched", 1, 3.0, max_batch_size=16,
                      extra="dynamic_batching { max_queue_delay_microseconds: 50000 }")  # fmt: skip
    write_config(
        root / "fragile",
        'max_batch_size: 4\ninput [{ name: "x" data_type: TYPE_FP32 dims: [2] }]\n'
        'output [{ name: "y" data_type: TYPE_FP32 dims: [2] }]\n' + EAGER,
    )
    save_torchscript(Fragile(), root / "fragile" / "1" / "model.pt")
    process = PredictorProcess(root, tmp_path_factory.mktemp("cache")).start()
    yield process
    assert process.stop() == 0


def test_metrics_count_stages_batches_and_answers_per_model(server):
    assert server.json("POST", "/v2/models/scale/infer", v2([1, 2, 3, 4]))[0] == 200
    assert server.json("POST", "/v2/models/scale/infer", v2([5, 6, 7, 8]))[0] == 200
    assert server.json("POST", "/v1/models/scale:predict", {"instances": [[1, 2, 3, 4]]})[0] == 200
    assert server.json("POST", "/v2/models/scale/infer", v2([1, 2, 3, 4], "wrong"))[0] == 400
    assert server.json("POST", "/v2/models/fragile/infer", v2([-1, 1]))[0] == 500
    assert server.json("POST", "/v2/models/nope/infer", v2([1]))[0] == 404

    def batched(i: int) -> int:
        return server.json("POST", "/v2/models/batched/infer", v2([float(i)] * 4))[0]

    with ThreadPoolExecutor(12) as pool:
        assert list(pool.map(batched, range(12))) == [200] * 12

    status, headers, body = server.request("GET", "/metrics")
    headers = {name.lower(): value for name, value in headers.items()}
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert {name: families[name].type for name in (*STAGES, "kpa_predictor_batch_size")} == dict.fromkeys(
        (*STAGES, "kpa_predictor_batch_size"), "histogram"
    )
    assert families["kpa_predictor_requests"].type == "counter"

    def value(sample: str, **labels: str) -> float:
        found = [s.value for f in families.values() for s in f.samples
                 if s.name == sample and s.labels == labels]  # fmt: skip
        assert len(found) == 1, f"{sample}{labels}: {found}"
        return found[0]

    # scale: three decoded and answered; the 400 failed in decode and got no further.
    assert value("request_preprocess_seconds_count", model_name="scale") == 3
    assert value("request_predict_seconds_count", model_name="scale") == 3
    assert value("request_postprocess_seconds_count", model_name="scale") == 3
    assert value("request_preprocess_seconds_bucket", model_name="scale", le="+Inf") == 3
    assert value("request_predict_seconds_sum", model_name="scale") > 0
    # fragile: decoded, then the model failed: no predict or postprocess time recorded.
    assert value("request_preprocess_seconds_count", model_name="fragile") == 1
    assert value("request_predict_seconds_count", model_name="batched") == 12
    counts = {(s.labels["model_name"], s.labels["response_code"]): s.value
              for s in families["kpa_predictor_requests"].samples if s.name.endswith("_total")}  # fmt: skip
    assert counts == {("scale", "200"): 3, ("scale", "400"): 1, ("fragile", "500"): 1, ("batched", "200"): 12}
    # The batcher ran the 12 one-example requests in fewer, bigger calls; each example counted once.
    calls = value("kpa_predictor_batch_size_count", model_name="batched")
    assert calls < 12 and value("kpa_predictor_batch_size_sum", model_name="batched") == 12
    assert value("kpa_predictor_batch_size_bucket", model_name="batched", le="1.0") < calls
    assert value("kpa_predictor_batch_size_count", model_name="scale") == 3  # unbatched: one call each
    assert server.request("POST", "/metrics")[0] == 405
