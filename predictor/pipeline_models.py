"""The seed's cat/dog pipeline as two tiny real torch models with fixed weights, written as model
repositories that `kpa predictor` serves (one repository per revision, the model named after it).
`kpa graph --write-demo` and the InferenceGraph tests build them (docs/inference-graph.md).

* ``cat-dog``: ``image`` FP32 [4] -> ``label`` INT64 [1]: 1 (dog) when x2 + x3 > x0 + x1, else 0 (cat).
* ``dog-breed``: ``image`` FP32 [4] -> ``breed`` INT64 [1]: the index of the largest of x0, x1 + x2, x3.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

CONFIG = """name: "{name}"
max_batch_size: 8
input [{{ name: "image" data_type: TYPE_FP32 dims: [4] }}]
output [{{ name: "{output}" data_type: TYPE_INT64 dims: [1] }}]
parameters {{ key: "backend" value {{ string_value: "eager" }} }}
"""


class Classifier(nn.Module):
    """A linear layer with fixed weights, then the winning class per row."""

    def __init__(self, weights: list[list[float]]) -> None:
        super().__init__()
        self.linear = nn.Linear(4, len(weights), bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor(weights))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.linear(image).argmax(dim=1, keepdim=True)


PIPELINE_MODELS = {
    "cat-dog": ("label", [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]),
    "dog-breed": ("breed", [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]),
}


def write_pipeline_repository(root: Path, name: str) -> Path:
    """A repository holding model ``name`` (version 1, TorchScript); returns the repository folder."""
    output, weights = PIPELINE_MODELS[name]
    folder = root / name / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(CONFIG.format(name=name, output=output))
    torch.jit.save(torch.jit.script(Classifier(weights).eval()), str(folder / "1" / "model.pt"))
    return root / name
