"""Small real models with fixed seeds, written as a ready-to-serve model repository.

* ``cnn`` — a ResNet-like image classifier: ``image`` FP32 [3, 64, 64] -> ``logits`` FP32 [10].
* ``transformer`` — a 2-layer TransformerEncoder classifier: ``tokens`` INT64 [32] -> ``logits`` FP32 [4].

Each version holds the model twice: ``model.pt`` (TorchScript: loads in milliseconds, served by the eager
backend and by KServe's own server) and ``model.pt2`` (a ``torch.export`` program with a dynamic batch
dimension: what inductor and zentorch compile from). ``formats`` chooses which of the two to write.

The demo repository defaults to the eager backend: compiling each model costs 20-40 s of CPU on a
2-core machine, which `make demo` cannot afford while it also runs proxies and a load generator.
``backend="auto"`` makes the predictor serve eager at once and switch to the compiled package when the
background compile finishes (and every later start loads that package from the cache in milliseconds).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

SEED = 20240601


class _ResidualBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm2d(channels_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(y)) + self.shortcut(x))


class DemoCNN(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(
            _ResidualBlock(16, 16, 1), _ResidualBlock(16, 32, 2), _ResidualBlock(32, 64, 2)
        )
        self.head = nn.Linear(64, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(image)).mean(dim=(2, 3)))


class DemoTransformer(nn.Module):
    def __init__(self, vocabulary: int = 1000, length: int = 32, width: int = 128, classes: int = 4):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, width)
        self.position = nn.Parameter(torch.randn(1, length, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(width, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embedding(tokens) + self.position).mean(dim=1))


@dataclass(frozen=True)
class DemoModel:
    name: str
    input_name: str
    input_type: str  # config enum name
    input_dims: tuple[int, ...]
    output_name: str
    output_dims: tuple[int, ...]

    def build(self) -> nn.Module:
        torch.manual_seed(SEED)
        module = DemoCNN() if self.name == "cnn" else DemoTransformer()
        if isinstance(module, DemoCNN):  # give the norms non-trivial statistics, as a trained net has
            for norm in module.modules():
                if isinstance(norm, nn.BatchNorm2d):
                    assert norm.running_mean is not None and norm.running_var is not None  # tracked: default
                    norm.running_mean.uniform_(-0.1, 0.1)
                    norm.running_var.uniform_(0.5, 1.5)
        return module.eval()

    def inputs(self, batch: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if self.input_type == "TYPE_INT64":
            return rng.integers(0, 1000, size=(batch, *self.input_dims), dtype=np.int64)
        return rng.standard_normal((batch, *self.input_dims)).astype(np.float32)

    def config(self, backend: str, max_batch_size: int, max_queue_delay_us: int | None) -> str:
        batching = ""
        if max_queue_delay_us is not None:
            batching = f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}\n"
        return (
            f'name: "{self.name}"\n'
            f"max_batch_size: {max_batch_size}\n"
            f'input [{{ name: "{self.input_name}" data_type: {self.input_type} '
            f"dims: {list(self.input_dims)} }}]\n"
            f'output [{{ name: "{self.output_name}" data_type: TYPE_FP32 dims: {list(self.output_dims)} }}]\n'
            f"{batching}"
            f'parameters {{ key: "backend" value {{ string_value: "{backend}" }} }}\n'
        )


DEMO_MODELS = {
    "cnn": DemoModel("cnn", "image", "TYPE_FP32", (3, 64, 64), "logits", (10,)),
    "transformer": DemoModel("transformer", "tokens", "TYPE_INT64", (32,), "logits", (4,)),
}


def save_model(model: DemoModel, path: Path, model_format: str, max_batch_size: int) -> None:
    """Write ``model`` to ``path`` as TorchScript (``torchscript``) or a torch.export program (``export``)."""
    module = model.build()
    example = torch.from_numpy(model.inputs(2))
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # record the plain ops, which compilers can optimise
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer notices
            if model_format == "torchscript":
                torch.jit.save(torch.jit.trace(module, example), str(path))
            elif model_format == "export":
                batch = torch.export.Dim("batch", min=1, max=max(2, max_batch_size))
                exported = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
                torch.export.save(exported, str(path))
            else:
                raise ValueError(f"model_format {model_format!r}: use 'export' or 'torchscript'")
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def build_demo_repository(
    path: str | Path,
    *,
    backend: str = "eager",
    formats: tuple[str, ...] = ("torchscript", "export"),
    max_batch_size: int = 32,
    max_queue_delay_us: int | None = 0,
    models: tuple[str, ...] = ("cnn", "transformer"),
    version: int = 1,
) -> Path:
    """Write the demo models into the repository at ``path`` (created if missing) and return it.

    ``max_queue_delay_us=None`` leaves dynamic batching off; 0 batches only what queues up under load.
    """
    root = Path(path)
    for name in models:
        model = DEMO_MODELS[name]
        folder = root / name / str(version)
        folder.mkdir(parents=True, exist_ok=True)
        for model_format in formats:
            file_name = "model.pt2" if model_format == "export" else "model.pt"
            save_model(model, folder / file_name, model_format, max_batch_size)
        (root / name / "config.pbtxt").write_text(model.config(backend, max_batch_size, max_queue_delay_us))
    return root


MANY_INPUTS, MANY_OUTPUTS = 16, 8


def many_model(index: int) -> nn.Module:
    """Model ``index`` of a many-models repository: a small MLP (16 -> 64 -> 8) with its own seed, so
    each model's answers are its own."""
    torch.manual_seed(SEED + index)
    return nn.Sequential(nn.Linear(MANY_INPUTS, 64), nn.ReLU(), nn.Linear(64, MANY_OUTPUTS)).eval()


def many_model_name(index: int) -> str:
    return f"mlp{index:02d}"


def build_many_models_repository(path: str | Path, count: int = 20) -> Path:
    """``count`` small MLPs (``mlp00``, ``mlp01``, ...; input ``x`` FP32 [16], output ``y`` FP32 [8]),
    eager TorchScript: the repository the 'Many models per pod' demo serves under a budget."""
    root = Path(path)
    for index in range(count):
        name = many_model_name(index)
        folder = root / name / "1"
        folder.mkdir(parents=True, exist_ok=True)
        aside = folder / ".model.pt.partial"
        torch.jit.save(torch.jit.script(many_model(index)), str(aside))
        aside.replace(folder / "model.pt")
        (root / name / "config.pbtxt").write_text(
            f'name: "{name}"\nmax_batch_size: 8\n'
            f'input [{{ name: "x" data_type: TYPE_FP32 dims: [{MANY_INPUTS}] }}]\n'
            f'output [{{ name: "y" data_type: TYPE_FP32 dims: [{MANY_OUTPUTS}] }}]\n'
            'parameters { key: "backend" value { string_value: "eager" } }\n'
        )
    return root
