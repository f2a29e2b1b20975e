"""Backend choice (pure, over a described platform) and the compile-cache key."""

import re
import zipfile
from pathlib import Path

import pytest

from predictor.backends import BackendChoice, BackendUnavailable, Platform, resolve_backend
from predictor.compile_cache import CompileCache, CompileJob, cache_key, model_digest
from predictor.config import TensorSpec

EVERYTHING = Platform(
    avx512=True, zentorch_library=Path("/z/libzentorch.so"), zentorch_version="2", cxx_compiler="g++"
)
NO_AVX512 = Platform(
    avx512=False, zentorch_library=Path("/z/libzentorch.so"), zentorch_version="2", cxx_compiler="g++"
)
NO_ZENTORCH = Platform(avx512=True, zentorch_library=None, zentorch_version=None, cxx_compiler="g++")
NOTHING = Platform(avx512=False, zentorch_library=None, zentorch_version=None, cxx_compiler=None)


@pytest.mark.parametrize(
    ("requested", "platform", "backend", "reason"),
    [
        ("auto", EVERYTHING, "zentorch", "zentorch is installed and the CPU has AVX-512"),
        ("auto", NO_AVX512, "inductor", "CPU lacks AVX-512"),
        ("auto", NO_ZENTORCH, "inductor", "zentorch is not installed"),
        ("auto", NOTHING, "eager", "no C++ compiler"),
        ("eager", EVERYTHING, "eager", "requested"),
        ("inductor", EVERYTHING, "inductor", "requested"),
        ("zentorch", EVERYTHING, "zentorch", "requested"),
    ],
    ids=[
        "auto-everything",
        "auto-no-avx512",
        "auto-no-zentorch",
        "auto-nothing",
        "eager",
        "inductor",
        "zentorch",
    ],
)
def test_backend_choice(requested, platform, backend, reason):
    choice = resolve_backend(requested, platform)
    assert isinstance(choice, BackendChoice) and choice.backend == backend and reason in choice.reason


@pytest.mark.parametrize(
    ("requested", "platform", "message"),
    [
        ("zentorch", NO_AVX512, "lacks AVX-512"),
        ("zentorch", NO_ZENTORCH, "not installed"),
        ("inductor", NOTHING, "no C++ compiler"),
    ],
    ids=["zentorch-without-avx512", "zentorch-not-installed", "inductor-without-compiler"],
)
def test_an_explicit_backend_that_cannot_run_is_an_error_not_a_downgrade(requested, platform, message):
    with pytest.raises(BackendUnavailable, match=re.escape(message)):
        resolve_backend(requested, platform)


def _job(
    tmp_path: Path, weights: bytes = b"w", backend: str = "zentorch", max_batch_size: int = 8
) -> CompileJob:
    model = tmp_path / f"model-{len(weights)}.pt"
    model.write_bytes(weights)
    spec = (TensorSpec("x", "FP32", (4,)),)
    return CompileJob(str(model), None, backend, max_batch_size, spec, spec)


ENV = {"torch": "2.13.0", "zentorch": "2.13.0.2", "avx512": True}


def test_cache_key_ignores_where_the_model_lives_but_not_what_it_is(tmp_path):
    base = cache_key(_job(tmp_path), ENV)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    assert cache_key(_job(moved), ENV) == base
    assert cache_key(_job(tmp_path, weights=b"other"), ENV) != base
    assert cache_key(_job(tmp_path, backend="inductor"), ENV) != base
    assert cache_key(_job(tmp_path, max_batch_size=16), ENV) != base
    assert cache_key(_job(tmp_path), {**ENV, "torch": "2.14.0"}) != base


def test_job_round_trips_through_json(tmp_path):
    job = _job(tmp_path)
    assert CompileJob.from_json(job.to_json()) == job


def test_cache_lookup_needs_both_package_and_record(tmp_path):
    cache = CompileCache(tmp_path / "cache")
    assert cache.lookup("k") is None
    cache.package_path("k").write_bytes(b"package")
    assert cache.lookup("k") is None  # a compile that died before writing its record
    cache.info_path("k").write_text('{"backend": "zentorch"}')
    assert cache.lookup("k") == (cache.package_path("k"), {"backend": "zentorch"})
    with cache.exclusive("k"):
        assert (tmp_path / "cache" / "k.lock").exists()


def _archive(path: Path, top: str, serialization_id: bytes, weights: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{top}/data.pkl", b"structure")
        archive.writestr(f"{top}/data/0", weights)
        archive.writestr(f"{top}/.data/serialization_id", serialization_id)
    return path


def test_model_digest_ignores_what_every_save_changes_but_not_the_weights(tmp_path):
    first = model_digest(_archive(tmp_path / "model.pt", "model", b"1111", b"w"))
    assert model_digest(_archive(tmp_path / "copy.pt", "copy", b"2222", b"w")) == first
    assert model_digest(_archive(tmp_path / "other.pt", "model", b"1111", b"x")) != first
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"not a zip")
    assert len(model_digest(plain)) == 64
