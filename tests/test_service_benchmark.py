"""Fast twin of the serving benchmark (experiments/benchmarks/serving.py): same code path, tiny counts."""

import json

import pytest

from bcarena.experiments.benchmarks.serving import run

pytest.importorskip("onnxruntime")


def test_serving_benchmark_fast_twin():
    results = run(None, calls=50, observations=1000, requests=100, levels=(1, 2))
    in_process = results["in_process_ms"]
    for batch in ("batch_1", "batch_64"):
        row = in_process[batch]
        assert {"torch_eager_1thr", "onnxruntime"} <= set(row)
        assert all(0 < v["p50"] <= v["p99"] for v in row.values() if isinstance(v, dict))
        assert row["onnx_speedup_p50_vs_torch_1thr"] > 0
    assert in_process["best_batch_1_p99_ms"] == min(
        v["p99"] for v in in_process["batch_1"].values() if isinstance(v, dict)
    )
    http = results["http_onnx"]
    assert http["clean"] and [lv["concurrency"] for lv in http["levels"]] == [1, 2]
    assert all(lv["ok"] == 100 and lv["server_errors"] == lv["dropped"] == 0 for lv in http["levels"])
    assert http["batched_npy_32"]["decisions_per_s"] > http["batched_npy_32"]["requests_per_s"]
    json.dumps(results)
