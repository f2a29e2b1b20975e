"""Build an AOTInductor package for one model file, in a child process of its own.

``python -m predictor.compiler JOB_JSON PACKAGE INFO`` exports the model with a dynamic batch dimension
(``torch.export``: from the ``model.pt2`` twin when the version has one, else through torch's
TorchScript-to-export converter, which handles simple models only), compiles it
with inductor — plus zentorch's graph pass for the zentorch backend — checks the package against the
eager model on two batch sizes, and only then moves it into place.

A separate process because compiling imports torch._inductor and zentorch (seconds), changes global
inductor state (zentorch's pass stays installed), uses a lot of memory for a while, and may crash; the
server that asked keeps serving meanwhile and loads the finished package in milliseconds.
The last stdout line is a JSON report: ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from predictor.compile_cache import CompileJob

TOLERANCE = 1e-3  # relative to the output's magnitude; compiled kernels reorder float sums


def compile_package(job: CompileJob, package: Path) -> dict[str, Any]:
    import torch
    import torch._inductor

    from predictor import runners

    torch.backends.mha.set_fastpath_enabled(False)  # let the compiler see TransformerEncoder's ops
    started = time.perf_counter()
    model_file = Path(job.model_file)
    batched = job.max_batch_size > 0
    example = _tensors(
        runners.example_inputs(job.inputs, 2 if batched else None, unknown=2, seed=1), job.inputs
    )
    reference = _eager_module(model_file)
    if job.export_file is not None:
        exportable = _eager_module(Path(job.export_file))
    elif model_file.suffix == ".pt2":
        exportable = reference
    else:
        from torch._export.converter import TS2EPConverter

        exportable = TS2EPConverter(reference, tuple(example)).convert().module()
    exported = torch.export.export(exportable, tuple(example), dynamic_shapes=_dynamic_shapes(job))
    configs: dict[str, Any] = {"freezing": True}
    if job.backend == "zentorch":
        import zentorch

        configs["joint_custom_post_pass"] = zentorch.export_optimize_pass
    temporary = package.with_name(f"{package.stem}.{os.getpid()}.tmp.pt2")
    with torch.no_grad():
        torch._inductor.aoti_compile_and_package(
            exported, package_path=str(temporary), inductor_configs=configs
        )
    compiled = torch._inductor.aoti_load_package(str(temporary))
    for batch in sorted({1, min(job.max_batch_size, 3)}) if batched else [None]:
        inputs = _tensors(runners.example_inputs(job.inputs, batch, unknown=3, seed=7), job.inputs)
        with torch.inference_mode():
            _compare(reference(*inputs), compiled(*inputs), batch)
    os.replace(temporary, package)
    return {
        "backend": job.backend,
        "compile_seconds": round(time.perf_counter() - started, 2),
        "zentorch_kernels": _zentorch_kernels(package),
        "torch": torch.__version__,
    }


def _tensors(arrays, specs):
    from predictor.runners import to_torch

    return [to_torch(a, spec.datatype) for a, spec in zip(arrays, specs, strict=True)]


def _eager_module(model_file: Path):
    import torch

    if model_file.suffix == ".pt2":
        return torch.export.load(str(model_file)).module()
    return torch.jit.load(str(model_file), map_location="cpu").eval()


def _dynamic_shapes(job: CompileJob):
    from torch.export import Dim

    batch = Dim("batch", min=1, max=job.max_batch_size) if job.max_batch_size >= 2 else None
    shapes = []
    for spec in job.inputs:
        dims = spec.reshape if spec.reshape is not None else spec.dims
        offset = 1 if job.max_batch_size > 0 else 0
        axes = {
            offset + i: Dim(f"{_identifier(spec.name)}_{i}", min=1) for i, d in enumerate(dims) if d == -1
        }
        if batch is not None:
            axes[0] = batch
        shapes.append(axes or None)
    return tuple(shapes)


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _compare(expected, actual, batch) -> None:
    import torch
    import torch.utils._pytree as pytree

    expected_flat, actual_flat = pytree.tree_leaves(expected), pytree.tree_leaves(actual)
    if len(expected_flat) != len(actual_flat):
        raise RuntimeError(
            f"compiled package returns {len(actual_flat)} tensors, the model {len(expected_flat)}"
        )
    for index, (want, got) in enumerate(zip(expected_flat, actual_flat, strict=True)):
        if want.shape != got.shape or want.dtype != got.dtype:
            raise RuntimeError(
                f"output {index} at batch {batch}: compiled {tuple(got.shape)} {got.dtype}, "
                f"eager {tuple(want.shape)} {want.dtype}"
            )
        if want.is_floating_point():
            scale = 1.0 + want.abs().max().item() if want.numel() else 1.0
            error = (want.float() - got.float()).abs().max().item() if want.numel() else 0.0
            if error > TOLERANCE * scale:
                raise RuntimeError(
                    f"output {index} at batch {batch}: compiled differs from eager by {error:.3g}"
                )
        elif not torch.equal(want, got):
            raise RuntimeError(f"output {index} at batch {batch}: compiled differs from eager")


def _zentorch_kernels(package: Path) -> int:
    """How many zentorch kernel calls the generated wrapper makes: proof the zentorch pass took effect."""
    count = 0
    with zipfile.ZipFile(package) as archive:
        for name in archive.namelist():
            if name.endswith("wrapper.cpp"):
                count += len(re.findall(rb"aoti_torch_cpu_zentorch_\w+\(", archive.read(name)))
    return count


def main(argv: list[str]) -> int:
    job_json, package, info = argv
    try:
        report = compile_package(CompileJob.from_json(job_json), Path(package))
    except Exception as exc:  # the parent shows this text as the model's compile failure
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    Path(info).write_text(json.dumps(report))
    print(json.dumps({"ok": True, **report}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
