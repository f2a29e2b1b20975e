"""The `kpa up` config file: what it accepts, and that every rejection names FILE:LINE and the key."""

import sys
import textwrap

import pytest

from localbackend.stack_file import DEFAULT_TIMEOUT_SECONDS, StackConfigError, load_stack, parse_stack


def parse(text: str):
    return parse_stack(textwrap.dedent(text), source="stack.yaml")


def test_minimal_revision_gets_knative_defaults():
    stack = parse(
        """
        revisions:
          - name: hello
            command: [./server, --fast]
        """
    )
    (rev,) = stack.revisions
    assert (rev.name, rev.namespace, rev.command) == ("hello", "default", ("./server", "--fast"))
    assert rev.port_env == "PORT"
    assert rev.container_concurrency == 0
    assert rev.timeout_seconds == DEFAULT_TIMEOUT_SECONDS
    assert rev.response_start_timeout_seconds is None
    assert rev.settings.stable_window == 60.0
    assert rev.settings.spec.target_value == pytest.approx(70.0)  # cc=0: default 100 x 70 %


def test_full_revision_with_annotations_and_config_overrides():
    stack = parse(
        """
        config:
          stable-window: 6s
          scale-to-zero-grace-period: 2s
        revisions:
          - name: model
            namespace: team-a
            command: "python -m http.server --bind 127.0.0.1"
            portEnv: HTTP_PORT
            env: {MODEL: small, THREADS: 1}
            containerConcurrency: 4
            annotations:
              autoscaling.knative.dev/target: 2
              autoscaling.knative.dev/max-scale: "6"
            config:
              scale-to-zero-grace-period: 5s
            timeoutSeconds: 30
            responseStartTimeoutSeconds: 10
            idleTimeoutSeconds: 5
            startupTimeoutSeconds: 12.5
            readinessProbe: {httpGet: {path: /ready}}
        """
    )
    (rev,) = stack.revisions
    assert rev.command == (sys.executable, "-m", "http.server", "--bind", "127.0.0.1")
    assert rev.port_env == "HTTP_PORT"
    assert rev.env == {"MODEL": "small", "THREADS": "1"}  # scalars keep their source text
    assert rev.annotations["autoscaling.knative.dev/target"] == "2"
    assert rev.settings.spec.target_value == pytest.approx(1.4)
    assert rev.settings.max_scale == 6
    assert rev.settings.stable_window == 6.0  # global config
    assert rev.settings.scale_to_zero_grace_period == 5.0  # the revision's own config wins
    assert (rev.timeout_seconds, rev.response_start_timeout_seconds, rev.idle_timeout_seconds) == (30, 10, 5)
    assert rev.startup_timeout_seconds == 12.5
    assert rev.readiness_probe == '{"httpGet": {"path": "/ready"}}'


def test_relative_paths_run_from_the_config_files_directory(tmp_path):
    path = tmp_path / "stack.yaml"
    path.write_text("revisions:\n  - {name: a, command: ./serve.sh}\n")
    assert load_stack(path).revisions[0].workdir == tmp_path


BAD_FILES = [
    (
        "containerConcurrency: x",
        'stack.yaml:5: revisions[0].containerConcurrency="x": not an integer',
    ),
    (
        "containerConcurrency: 1001",
        'stack.yaml:5: revisions[0].containerConcurrency="1001": must be in [0, 1000]',
    ),
    ("timeoutSeconds: 0", 'stack.yaml:5: revisions[0].timeoutSeconds="0": must be in [1, 600]'),
    (
        "responseStartTimeoutSeconds: 400",
        'stack.yaml:5: revisions[0].responseStartTimeoutSeconds="400": must be in [0, 300]',
    ),
    ("startupTimeoutSeconds: -1", 'stack.yaml:5: revisions[0].startupTimeoutSeconds="-1": must be a number'),
    ("portEnv: 9PORT", 'stack.yaml:5: revisions[0].portEnv="9PORT": not an environment variable name'),
    ("env: [A, B]", "stack.yaml:5: revisions[0].env: must be a mapping"),
    ("env: {A: [1]}", "stack.yaml:5: revisions[0].env[A]: must be a string, not a list"),
    ("comand: x", "stack.yaml:5: revisions[0].comand: unknown key; did you mean 'command'?"),
    (
        "annotations:\n      autoscaling.knative.dev/target: abc",
        'stack.yaml:6: revisions[0].annotations: annotation autoscaling.knative.dev/target="abc": '
        "not a number",
    ),
    (
        "annotations:\n      autoscaling.knative.dev/window: 5s",
        'stack.yaml:6: revisions[0].annotations: annotation autoscaling.knative.dev/window="5s": '
        "must be in [6s, 1h]",
    ),
    (
        "annotations:\n      autoscaling.knative.dev/targt: '5'",
        'stack.yaml:6: revisions[0].annotations: annotation autoscaling.knative.dev/targt="5": '
        "unknown autoscaling annotation",
    ),
    (
        "config:\n      max-scale-down-rate: '1'",
        'stack.yaml:6: revisions[0].config: config-autoscaler max-scale-down-rate="1": '
        "must be greater than 1",
    ),
    (
        "config:\n      stable-windw: 6s",
        'stack.yaml:6: revisions[0].config: config-autoscaler stable-windw="6s": '
        "unknown key; did you mean 'stable-window'?",
    ),
    (
        "readinessProbe: {httpGet: {path: ready}}",
        "stack.yaml:5: revisions[0].readinessProbe: httpGet.path='ready': must start with /",
    ),
]


@pytest.mark.parametrize(
    ("extra", "expected"),
    BAD_FILES,
    ids=[
        "cc-not-int",
        "cc-too-big",
        "timeout-0",
        "response-start-timeout-too-big",
        "startup-timeout-negative",
        "port-env-not-a-name",
        "env-a-list",
        "env-value-a-list",
        "misspelt-command",
        "bad-annotation-value",
        "annotation-out-of-range",
        "misspelt-annotation",
        "bad-config-value",
        "misspelt-config-key",
        "probe-path-relative",
    ],
)
def test_bad_revision_fields_are_rejected_with_line_and_key(extra, expected):
    text = "# a comment\nrevisions:\n  - name: hello\n    command: ./server\n    " + extra + "\n"
    with pytest.raises(StackConfigError) as err:
        parse_stack(text, source="stack.yaml")
    assert str(err.value).startswith(expected), str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "stack.yaml: the file is empty"),
        ("revisions: [\n", "stack.yaml:2: not valid YAML"),
        ("- a\n", "stack.yaml:1: the file: must be a mapping"),
        ("revisions: []\n", "stack.yaml:1: revisions: must be a non-empty list"),
        ("config: {}\n", "stack.yaml:1: missing 'revisions:'"),
        ("revision:\n  - name: a\n", "stack.yaml:1: revision: unknown key; did you mean 'revisions'?"),
        ("revisions:\n  - command: x\n", "stack.yaml:2: revisions[0]: missing 'name'"),
        ("revisions:\n  - name: a\n", "stack.yaml:2: revisions[0]: missing 'command'"),
        (
            "revisions:\n  - {name: a, command: []}\n",
            "stack.yaml:2: revisions[0].command: must be a command line",
        ),
        (
            "revisions:\n  - {name: a, command: 'x \"unclosed'}\n",
            'stack.yaml:2: revisions[0].command="x "unclosed"',
        ),
        (
            "revisions:\n  - {name: Hello, command: x}\n",
            'stack.yaml:2: revisions[0].name="Hello": must be a DNS label',
        ),
        (
            "revisions:\n  - {name: a, command: x}\n  - {name: a, command: y}\n",
            'stack.yaml:3: revisions[1].name="a": already used by revisions[0]',
        ),
        (
            "config:\n  stable-window: 1s\nrevisions:\n  - {name: a, command: x}\n",
            'stack.yaml:2: config: config-autoscaler stable-window="1s": must be in [6s, 1h]',
        ),
        (
            "revisions:\n  - name: a\n    command: x\n    name: b\n",
            "stack.yaml:4: revisions[0].name: given twice",
        ),
        (
            "maxPods: 0\nrevisions:\n  - {name: a, command: x}\n",
            'stack.yaml:1: maxPods="0": must be in [1, 10000]',
        ),
        (
            "maxPods: many\nrevisions:\n  - {name: a, command: x}\n",
            'stack.yaml:1: maxPods="many": not an integer',
        ),
    ],
    ids=[
        "empty",
        "not-yaml",
        "not-a-mapping",
        "no-revisions",
        "missing-revisions",
        "misspelt-revisions",
        "no-name",
        "no-command",
        "empty-command",
        "unclosed-quote",
        "name-not-a-dns-label",
        "name-used-twice",
        "bad-config",
        "name-given-twice",
        "max-pods-0",
        "max-pods-not-an-integer",
    ],
)
def test_bad_files_are_rejected_with_line_and_key(text, expected):
    with pytest.raises(StackConfigError) as err:
        parse_stack(text, source="stack.yaml")
    assert str(err.value).startswith(expected), str(err.value)


def test_max_pods_sets_the_local_capacity_cap():
    assert parse("revisions:\n  - {name: a, command: x}\n").max_pods is None  # the machine's default
    assert parse("maxPods: 12\nrevisions:\n  - {name: a, command: x}\n").max_pods == 12


def test_unreadable_file_names_the_path(tmp_path):
    with pytest.raises(StackConfigError, match=r"missing\.yaml: cannot read"):
        load_stack(tmp_path / "missing.yaml")


def test_example_stack_files_are_valid():
    from pathlib import Path

    examples = sorted((Path(__file__).parents[2] / "examples" / "stack").glob("*.yaml"))
    assert examples
    for path in examples:
        assert load_stack(path).revisions
