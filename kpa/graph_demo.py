"""`kpa graph --write-demo DIR`: the seed's cat/dog InferenceGraph as files a new user runs with
`kpa up` — two model repositories (predictor.pipeline_models), the graph, and a stack file where the
router and both steps are revisions starting at zero (docs/inference-graph.md).
"""

from __future__ import annotations

from pathlib import Path

# KServe's docs' dog-breed pipeline, unchanged but for the condition: our predictor's V1 answers are
# numbers, one row per instance (a dog is [1]), where KServe's example model answers the label "dog".
DEMO_GRAPH = """\
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: dog-breed-pipeline
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
      - serviceName: cat-dog
        name: cat_dog_classifier
      - serviceName: dog-breed
        name: dog_breed_classifier
        data: $request
        condition: "[@this].#(predictions.0.0==1)"
"""

DEMO_STACK = """\
# Written by `kpa graph --write-demo`. Every revision starts at zero: the first request wakes the
# router (pipeline), whose calls wake cat-dog and, for a dog, dog-breed.
config:
  stable-window: 6s
  scale-to-zero-grace-period: 2s
  allow-zero-initial-scale: "true"
revisions:
  - name: pipeline
    graph: graph.yaml
    timeoutSeconds: 120
    annotations: {autoscaling.knative.dev/initial-scale: "0"}
"""

_STEP = """\
  - name: {name}
    command: python -m kpa predictor --model-repository models/{name} --log-level warning
    readinessProbe: {{httpGet: {{path: /v2/health/ready}}}}
    startupTimeoutSeconds: 60
    annotations: {{autoscaling.knative.dev/initial-scale: "0"}}
"""


def write_demo(directory: Path) -> Path:
    """Write the models, graph.yaml and stack.yaml into ``directory``; returns the stack file."""
    from predictor.pipeline_models import PIPELINE_MODELS, write_pipeline_repository

    directory.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_MODELS:
        write_pipeline_repository(directory / "models", name)
    (directory / "graph.yaml").write_text(DEMO_GRAPH)
    stack = directory / "stack.yaml"
    stack.write_text(DEMO_STACK + "".join(_STEP.format(name=name) for name in PIPELINE_MODELS))
    return stack
