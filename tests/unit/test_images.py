"""images/Dockerfile.*: what the images hold, held to pyproject.toml and the manifests' expectations."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TEST_ONLY = {"fakecluster"}  # the fake API server: tests only
KPA, PREDICTOR = ROOT / "images/Dockerfile.kpa", ROOT / "images/Dockerfile.predictor"


def _instructions(path: Path) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _pin(requirements: list[str], name: str) -> str:
    (pin,) = [r for r in requirements if re.match(rf"{name}\s*==", r)]
    return pin.replace(" ", "")


@pytest.mark.parametrize("dockerfile", [KPA, PREDICTOR], ids=lambda p: p.name)
def test_each_image_installs_every_package_the_project_ships(dockerfile):
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = {pattern.rstrip("*") for pattern in include} - TEST_ONLY
    copied = {m[1] for line in _instructions(dockerfile) if (m := re.fullmatch(r"COPY (\w+) /src/\1", line))}
    assert copied == shipped


@pytest.mark.parametrize("dockerfile", [KPA, PREDICTOR], ids=lambda p: p.name)
def test_each_image_runs_as_the_numeric_non_root_user_the_manifests_name(dockerfile):
    # runAsNonRoot can only be checked by the kubelet against a numeric USER.
    assert "USER 65532:65532" in _instructions(dockerfile)


def test_the_kpa_image_leaves_torch_out():
    steps = _instructions(KPA)
    assert 'ENTRYPOINT ["kpa"]' in steps
    install = next(s for s in steps if "pip install" in s)
    # tracing: the activator, the controller and the sidecar it injects read config-tracing
    assert '"/src[kubernetes,tracing]"' in install and "predictor" not in install and "torch" not in install


def test_the_predictor_image_pins_torch_and_zentorch_as_the_project_does():
    steps = _instructions(PREDICTOR)
    assert 'ENTRYPOINT ["kpa", "predictor"]' in steps
    install = next(s for s in steps if "pip install" in s)
    extra = PYPROJECT["project"]["optional-dependencies"]["predictor"]
    torch_pin = _pin(extra, "torch")
    assert torch_pin == "torch==2.13.0" and _pin(extra, "zentorch") == "zentorch==2.13.0.2"
    assert f'--index-url "$TORCH_INDEX_URL" {torch_pin}' in install  # the CPU build, pinned
    assert '"/src[predictor,tracing]"' in install  # zentorch comes pinned with the extra
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in steps
    assert f"pip install --quiet {torch_pin}" in (ROOT / "Makefile").read_text()
