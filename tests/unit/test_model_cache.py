"""The multi-model LRU policy: which models a load unloads, waits for or is refused."""

import pytest
from tables import named

from predictor.model_cache import Admit, Budget, Refuse, Resident, Wait, parse_bytes, plan_load

MB = 1_000_000


def _r(size_mb: int, last_used: float, in_flight: int = 0) -> Resident:
    return Resident(size_mb * MB, last_used, in_flight)


@pytest.mark.parametrize(
    ("label", "residents", "size_mb", "budget", "plan"),
    named([
        ("empty pod: load without unloading", {}, 10, Budget(100 * MB), Admit(())),
        ("room left: nothing unloaded", {"a": _r(40, 1.0)}, 50, Budget(100 * MB), Admit(())),
        ("exactly full after the load still fits", {"a": _r(50, 1.0)}, 50, Budget(100 * MB), Admit(())),
        ("least recently used goes first", {"a": _r(40, 2.0), "b": _r(40, 1.0)}, 30, Budget(100 * MB),
         Admit(("b",))),
        ("unloads as many as the size needs, oldest first",
         {"a": _r(30, 3.0), "b": _r(30, 1.0), "c": _r(30, 2.0)}, 70, Budget(100 * MB), Admit(("b", "c"))),
        ("a model with requests in flight is skipped, the next oldest goes",
         {"a": _r(40, 1.0, in_flight=2), "b": _r(40, 2.0)}, 30, Budget(100 * MB), Admit(("b",))),
        ("only busy models in the way: wait", {"a": _r(60, 1.0, in_flight=1)}, 50, Budget(100 * MB),
         Wait("")),
        ("bigger than the whole budget: refused", {}, 101, Budget(100 * MB), Refuse("")),
        ("max-models: the oldest of a full set goes", {"a": _r(1, 2.0), "b": _r(1, 1.0)}, 1,
         Budget(max_models=2), Admit(("b",))),
        ("max-models with room: nothing unloaded", {"a": _r(1, 2.0)}, 1, Budget(max_models=2), Admit(())),
        ("both limits: the count forces an unload the bytes would not",
         {"a": _r(10, 2.0), "b": _r(10, 1.0)}, 10, Budget(100 * MB, 2), Admit(("b",))),
        ("a reload of a resident model replaces its own size",
         {"a": _r(60, 1.0, in_flight=1), "b": _r(30, 2.0)}, 75, Budget(100 * MB), Admit(("b",))),
        ("equal last-use times: by name, so the choice is repeatable",
         {"z": _r(50, 1.0), "y": _r(50, 1.0)}, 50, Budget(100 * MB), Admit(("y",))),
    ]),
)  # fmt: skip
def test_plan_load(label, residents, size_mb, budget, plan):
    decided = plan_load(residents, "a" if "reload" in label else "new", size_mb * MB, budget)
    assert type(decided) is type(plan)
    if isinstance(plan, Admit):
        assert decided == plan


def test_a_wait_names_the_budget_and_the_busy_models():
    decided = plan_load({"busy": _r(90, 1.0, in_flight=1)}, "new", 20 * MB, Budget(100 * MB))
    assert isinstance(decided, Wait)
    assert "--memory-budget 100,000,000 bytes" in decided.reason and "busy" in decided.reason


def test_a_refusal_says_how_to_fix_it():
    decided = plan_load({}, "huge", 200 * MB, Budget(100 * MB, 3))
    assert isinstance(decided, Refuse)
    assert "--memory-budget 100,000,000 bytes and --max-models 3" in decided.reason
    assert "size_bytes" in decided.reason


def test_the_plan_leaves_the_pod_within_budget_whatever_the_order_of_use():
    """Property: after the evictions an admitted load never exceeds either limit."""
    import random

    rng = random.Random(7)
    for _ in range(500):
        budget = Budget(rng.choice([None, 100 * MB]), rng.choice([None, 1, 3, 5]))
        residents = {
            f"m{i}": Resident(rng.randint(1, 40) * MB, rng.random(), rng.choice([0, 0, 0, 1]))
            for i in range(rng.randint(0, 6))
        }
        size = rng.randint(1, 60) * MB
        decided = plan_load(residents, "new", size, budget)
        if isinstance(decided, Admit):
            kept = {n: r for n, r in residents.items() if n not in decided.evict}
            assert all(residents[n].in_flight == 0 for n in decided.evict)
            if budget.memory_bytes is not None:
                assert sum(r.size for r in kept.values()) + size <= budget.memory_bytes
            if budget.max_models is not None:
                assert len(kept) + 1 <= budget.max_models
            idle_kept = [r.last_used for r in kept.values() if r.in_flight == 0]
            assert all(residents[n].last_used <= min(idle_kept, default=1e9) for n in decided.evict)


@pytest.mark.parametrize(
    ("label", "text", "expected"),
    named([
        ("plain bytes", "536870912", 536870912),
        ("an int passes through", 4096, 4096),
        ("binary suffix", "512Mi", 512 * 2**20),
        ("decimal suffix", "2G", 2 * 10**9),
        ("fractions", "1.5Gi", 3 * 2**29),
        ("kilo is lower-case k", "64k", 64_000),
        ("Ki", "4Ki", 4096),
    ]),
)  # fmt: skip
def test_parse_bytes(label, text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "12Q", "-5", "abc", "1e9", "5 MiB"])
def test_parse_bytes_refuses_with_examples(text):
    with pytest.raises(ValueError, match=r"expected bytes such as 536870912, 512Mi or 2G"):
        parse_bytes(text, "--memory-budget")
