"""The policy interface as users meet it: loading by name or ``module:Class`` from a scenario and a
stack file, errors that name the policy and the fix, a policy's garbage refused, and the KPA left as
it was when no policy is named."""

from __future__ import annotations

import pytest
from tables import named

from autoscaler.policy import PolicyAutoscaler, PolicyDecision, PolicyError
from autoscaler.policy_loader import make_autoscaler, parse_policy, with_policy
from autoscaler.revision import RevisionAutoscaler, settings_from
from autoscaler.stat import Stat
from localbackend.stack_file import StackConfigError, parse_stack
from simulation.scenario import ScenarioError, parse_scenario

A = "autoscaling.knative.dev/"


@pytest.mark.parametrize(
    ("behaviour", "value", "message"),
    named(
        [
            ("an unknown name lists the choices", "hap", "unknown; give kpa, hpa, keda-http, module:Class"),
            ("a module that does not import", "no_such_module_xyz:P", "cannot import no_such_module_xyz"),
            ("a module without the class", "json:NoSuchPolicy", "json has no class NoSuchPolicy"),
            ("a class without decide", "json:JSONDecoder", "JSONDecoder has no decide(observation)"),
            ("a file that is not there", "nowhere/p.py:P", "no such file"),
            ("a mapping without a name", {"pool": 2}, "policy=None"),
            ("options for the kpa", {"name": "kpa", "target": 3}, "policy kpa takes no options"),
        ]
    ),
)
def test_a_policy_that_cannot_be_loaded_is_named_with_the_fix(behaviour, value, message):
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_policy(value)


def test_no_policy_or_kpa_is_the_kpa_itself():
    assert type(make_autoscaler(settings_from({}), 0.0)) is RevisionAutoscaler
    kpa = with_policy(settings_from({}), parse_policy("kpa"))
    assert type(make_autoscaler(kpa, 0.0)) is RevisionAutoscaler


def test_bad_options_fail_when_the_policy_is_named_not_at_its_first_decision():
    with pytest.raises(PolicyError, match="targetValue=0"):
        with_policy(settings_from({}), parse_policy({"name": "keda-http", "targetValue": 0}))
    with pytest.raises(PolicyError, match=r"cannot build it: TypeError"):
        with_policy(settings_from({}), parse_policy({"name": "hpa", "bogus": 1}))


def test_the_hpa_class_annotation_and_another_policy_conflict():
    settings = settings_from({A + "class": "hpa.autoscaling.knative.dev"})
    with pytest.raises(PolicyError, match=r"conflicts with the annotation autoscaling\.knative\.dev/class"):
        with_policy(settings, parse_policy("keda-http"))


class Answers:
    """A policy answering from a list, for the adapter's checks."""

    answers: tuple = ()

    def __init__(self, settings, now):
        self.left = list(self.answers)

    def decide(self, seen):
        answer = self.left.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def adapter(answers, strict=True, annotations=None):
    Answers.answers = tuple(answers)
    settings = settings_from(annotations or {})
    return PolicyAutoscaler("mine:Answers", Answers(settings, 0.0), settings, 0.0, strict=strict)


@pytest.mark.parametrize(
    ("behaviour", "answer"),
    named([("text", "three"), ("negative", -1), ("a bool", True), ("nothing", None), ("a float", 2.5)]),
)
def test_garbage_from_a_policy_is_refused_naming_it(behaviour, answer):
    with pytest.raises(
        PolicyError, match=r"policy mine:Answers returned .*: expected desired pods as an int"
    ):
        adapter([answer]).decide(1.0, 0)


def test_a_policy_that_raises_is_named_and_live_keeps_the_last_decision():
    with pytest.raises(PolicyError, match="policy mine:Answers failed at t=1: RuntimeError: boom"):
        adapter([RuntimeError("boom")]).decide(1.0, 0)
    live = adapter([3, RuntimeError("boom")], strict=False)
    assert live.decide(1.0, 0).desired_pods == 3
    kept = live.decide(3.0, 3)
    assert kept.desired_pods == 3 and "RuntimeError: boom; keeping 3 pods" in kept.reason


@pytest.mark.parametrize(
    ("behaviour", "answer", "ready", "mode"),
    named(
        [
            ("pods ready: the activator leaves the path", 2, 2, "serve"),
            ("zero desired: the activator holds requests", 0, 2, "proxy"),
            ("nothing ready yet: through the activator", 2, 0, "proxy"),
            (
                "a policy may keep the activator in front",
                PolicyDecision(2, activator_in_path=True),
                2,
                "proxy",
            ),
        ]
    ),
)
def test_the_activator_is_in_the_path_when_no_pod_can_serve_or_the_policy_asks(
    behaviour, answer, ready, mode
):
    assert adapter([answer]).decide(1.0, ready).mode == mode


def test_min_and_max_scale_bound_any_policy_and_a_pushed_stat_at_zero_pokes():
    bounded = adapter([0, 50], annotations={A + "min-scale": "1", A + "max-scale": "4"})
    assert [bounded.decide(t, 1).desired_pods for t in (1.0, 3.0)] == [1, 4]
    at_zero = adapter([0])
    at_zero.decide(1.0, 0)
    assert at_zero.record(Stat("activator", average_concurrent_requests=1.0), 2.0) is True


SCENARIO = {
    "duration": 60,
    "revision": {"service_time": {"dist": "constant", "value": 0.1}},
    "workload": [{"type": "poisson", "rate": 1, "duration": 60}],
}


def test_a_scenario_names_its_policy_and_a_bad_one_is_reported_at_its_key():
    assert parse_scenario({**SCENARIO, "policy": "hpa"}).settings.policy.name == "hpa"
    with pytest.raises(ScenarioError, match=r"policy=\"?nope:X\"?: policy 'nope:X': cannot import nope"):
        parse_scenario({**SCENARIO, "policy": "nope:X"})


def test_a_stack_file_names_its_policy_and_a_bad_one_is_reported_with_its_line():
    text = "revisions:\n  - name: hello\n    command: python -m kpa.sample_app\n    policy: {}\n"
    assert parse_stack(text.replace("{}", "keda-http")).revisions[0].settings.policy is not None
    with pytest.raises(StackConfigError, match=r"stack.yaml:4: revisions\[0\].policy: policy 'json:Nope'"):
        parse_stack(text.replace("{}", "json:Nope"), "stack.yaml")
