"""Multi-model pods in the simulator (``revision.models``): hit ratios against independent calculations,
monotone in the budget, and the scenario errors a user gets."""

import math

import numpy as np
import pytest
from tables import named

from simulation.engine import Simulation
from simulation.report import summarize
from simulation.scenario import ScenarioError, parse_scenario

MI = 2**20


def _scenario(models: dict, rate: float = 20, duration: float = 600, warmup: float = 60) -> dict:
    return {
        "duration": duration,
        "warmup": warmup,
        "revision": {
            "service_time": {"dist": "exponential", "mean": 0.005},
            "annotations": {f"autoscaling.knative.dev/{key}": "1" for key in ("min-scale", "max-scale")},
            "models": {"size": "1Mi", "load_time": {"dist": "constant", "value": 0.01}, **models},
        },
        "workload": [{"type": "poisson", "rate": rate, "duration": duration}],
    }


def _models_report(document: dict, seed: int = 1) -> dict:
    return summarize(Simulation(parse_scenario(document), seed=seed).run())["models"]


def _che_hit_ratio(weights: np.ndarray, capacity: int) -> float:
    """Che's approximation of an LRU cache's hit ratio under independent requests: the characteristic time
    T solves sum(1 - exp(-p_i T)) = capacity; the hit ratio is sum(p_i (1 - exp(-p_i T)))."""
    low, high = 0.0, 1e9
    for _ in range(200):
        middle = (low + high) / 2
        if np.sum(1 - np.exp(-weights * middle)) < capacity:
            low = middle
        else:
            high = middle
    return float(np.sum(weights * (1 - np.exp(-weights * low))))


def test_uniform_popularity_hits_k_over_n():
    """With every model equally likely, an LRU cache of k of n models hits k/n of the time."""
    report = _models_report(_scenario({"count": 10, "popularity": "uniform", "memory_budget": "4Mi"}))
    assert report["requests"] > 9000
    assert report["hit_ratio"] == pytest.approx(4 / 10, abs=0.03)
    assert report["hits"] + report["misses"] == report["requests"]


def test_zipf_popularity_matches_ches_approximation():
    weights = 1 / np.arange(1, 21)
    weights /= weights.sum()
    report = _models_report(_scenario({"count": 20, "zipf_s": 1.0, "max_models": 5}))
    assert report["hit_ratio"] == pytest.approx(_che_hit_ratio(weights, 5), abs=0.03)


def test_a_bigger_budget_never_lowers_the_hit_ratio():
    ratios = [
        _models_report(_scenario({"count": 20, "memory_budget": f"{k}Mi"}, duration=300))["hit_ratio"]
        for k in (1, 2, 4, 8, 12, 16, 20)
    ]
    assert ratios == sorted(ratios), ratios
    assert ratios[-1] > 0.99  # everything fits: only each model's first request misses


def test_without_a_budget_each_model_loads_once_and_nothing_is_evicted():
    report = _models_report(_scenario({"count": 5, "popularity": "uniform"}, warmup=0))
    assert report["loads"] == 5 and report["evictions"] == 0
    assert report["misses"] >= 5


def test_load_waits_are_the_load_time_when_loads_never_queue():
    slow = {"dist": "constant", "value": 0.2}
    report = _models_report(_scenario({"count": 20, "max_models": 5, "load_time": slow}, rate=2))
    assert report["load_wait"]["p50"] == pytest.approx(0.2, abs=0.01)
    assert report["evictions"] >= report["loads"] - 5


def test_a_revision_without_models_reports_none():
    document = _scenario({"count": 1})
    del document["revision"]["models"]
    assert "models" not in summarize(Simulation(parse_scenario(document)).run())


@pytest.mark.parametrize(
    ("label", "models", "message"),
    named([
        ("budget below one model", {"count": 3, "memory_budget": "512Ki"},
         "revision.models.memory_budget=\"512Ki\": smaller than one model"),
        ("not bytes", {"count": 3, "memory_budget": "lots"}, "expected bytes such as 536870912, 512Mi or 2G"),
        ("zipf_s without zipf", {"count": 3, "popularity": "uniform", "zipf_s": 2},
         "only used with popularity: zipf"),
        ("unknown key", {"count": 3, "budget": 5}, "revision.models.budget: unknown key"),
        ("no models", {"count": 0}, "revision.models.count=0: must be >= 1"),
        ("max_models zero", {"count": 3, "max_models": 0}, "must be >= 1"),
        ("sizes not one per model", {"count": 3, "size": ["1Mi", "2Mi"]},
         "revision.models.size=.*: 2 sizes for 3 models; give one per model, or one for all"),
        ("a size not bytes", {"count": 2, "size": ["1Mi", "big"]}, "size\\[1\\]='big': expected bytes"),
        ("budget below the biggest model",
         {"count": 3, "size": ["1Mi", "6Mi", "1Mi"], "memory_budget": "5Mi"},
         "smaller than model 1 \\(size\\[1\\] = 6,291,456 bytes\\): it could never load"),
    ]),
)  # fmt: skip
def test_scenario_errors_name_the_key(label, models, message):
    with pytest.raises(ScenarioError, match=message if "\\" in message else message.replace("(", r"\(")):
        parse_scenario(_scenario(models))


def test_model_picks_follow_the_popularity():
    from simulation.models import ModelsRun, ModelsSpec

    spec = ModelsSpec(count=4, zipf_s=1.0)
    streams = np.random.SeedSequence(3).spawn(2)
    run = ModelsRun(spec, streams[0], streams[1])
    counts = np.bincount([run.pick() for _ in range(40_000)], minlength=4) / 40_000
    expected = spec.weights()
    assert all(math.isclose(c, e, abs_tol=0.01) for c, e in zip(counts, expected, strict=True))


@pytest.mark.parametrize(
    ("label", "sizes", "budget", "expected"),
    named([
        # Two equally popular models: when both fit, only each one's first request misses; when only
        # one fits at a time, a request hits only when the previous one asked for the same model (1/2).
        ("both fit", ["2Mi", "2Mi"], "4Mi", 1.0),
        ("one big, one small: never together", ["3Mi", "2Mi"], "4Mi", 0.5),
        ("one size for all, as a list", ["1Mi", "1Mi"], "1Mi", 0.5),
    ]),
)  # fmt: skip
def test_each_model_takes_its_own_size_in_the_budget(label, sizes, budget, expected):
    models = {"count": 2, "popularity": "uniform", "size": sizes, "memory_budget": budget}
    report = _models_report(_scenario(models, rate=10, duration=300, warmup=30))
    assert report["hit_ratio"] == pytest.approx(expected, abs=0.03), report


def test_small_models_share_the_room_one_big_one_takes():
    """A 4Mi budget holds the 4Mi model alone or the four 1Mi models together: with the big one the
    least popular, the small ones stay resident almost always and its requests miss."""
    models = {"count": 5, "popularity": "uniform", "size": ["1Mi"] * 4 + ["4Mi"], "memory_budget": "4Mi"}
    spec = parse_scenario(_scenario(models)).revision.models
    assert spec is not None and [spec.size_of(i) for i in range(5)] == [MI, MI, MI, MI, 4 * MI]
    report = _models_report(_scenario(models, rate=10, duration=300, warmup=30))
    # The big model's request (1/5) always misses and evicts all four; each small one's next request
    # after that misses too. Fewer hits than if all five were the same 1Mi (4 of 5 resident: 0.8).
    assert 0.3 < report["hit_ratio"] < 0.75, report
