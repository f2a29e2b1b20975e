"""Reading the model repository: which directories are models, which version files serve, what the
fingerprints notice, and that no name or link reaches outside the repository root."""

from pathlib import Path

import pytest
from tables import named

from predictor.repository import InvalidName, Repository, check_model_name, parse_version

CONFIG = """
max_batch_size: 2
input [{ name: "x" data_type: TYPE_FP32 dims: [1] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [1] }]
"""


def _model(root: Path, name: str, versions: dict[int, str], config: str = CONFIG) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "config.pbtxt").write_text(config)
    for version, file_name in versions.items():
        (root / name / str(version)).mkdir(exist_ok=True)
        (root / name / str(version) / file_name).write_bytes(b"weights")


@pytest.mark.parametrize(
    "name",
    ["resnet", "bert-base_v2.1", "A", "x" * 128],
    ids=["plain", "dashes-dots-underscores", "one-letter", "128-chars"],
)
def test_ordinary_model_names_are_accepted(name):
    assert check_model_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "..", ".", ".hidden", "a/b", "../etc", "a..b", "x" * 129, "with space", "ünïcode", "a\\b", "-lead"],
    ids=[
        "empty",
        "dot-dot",
        "dot",
        "hidden",
        "slash",
        "parent-path",
        "double-dot-inside",
        "129-chars",
        "space",
        "non-ascii",
        "backslash",
        "leading-dash",
    ],
)
def test_names_that_could_escape_or_confuse_are_refused(name):
    with pytest.raises(InvalidName, match="is not allowed"):
        check_model_name(name)


@pytest.mark.parametrize(
    ("text", "ok"),
    named(
        [("1", True), ("42", True), ("0", False), ("01", False), ("-1", False), ("v1", False)],
        lambda text, _: text,
    ),
)
def test_versions_are_positive_integers_without_padding(text, ok):
    if ok:
        assert parse_version(text) == int(text)
    else:
        with pytest.raises(InvalidName, match="not a positive integer"):
            parse_version(text)


def test_models_are_directories_with_a_config_and_valid_name(tmp_path):
    _model(tmp_path, "good", {1: "model.pt"})
    (tmp_path / "no_config" / "1").mkdir(parents=True)
    _model(tmp_path, ".hidden", {1: "model.pt"})
    (tmp_path / "stray.txt").write_text("not a model")
    assert Repository(tmp_path).model_names() == ["good"]


def test_latest_version_serves_and_torchscript_wins_with_the_export_twin_kept(tmp_path):
    _model(tmp_path, "m", {1: "model.pt", 3: "model.pt", 2: "model.pt"})
    (tmp_path / "m" / "3" / "model.pt2").write_bytes(b"exported")
    (tmp_path / "m" / "07").mkdir()  # not a version directory name
    source = Repository(tmp_path).read_model("m")
    assert source.problem is None
    [version] = source.versions
    assert version.version == 3 and version.model_file.name == "model.pt"
    assert version.export_file is not None and version.export_file.name == "model.pt2"


def test_a_version_without_a_model_file_names_what_is_missing(tmp_path):
    _model(tmp_path, "m", {})
    (tmp_path / "m" / "1").mkdir()
    [version] = Repository(tmp_path).read_model("m").versions
    assert version.model_file is None and "m/1/ holds no model.pt or model.pt2" in version.problem


def test_platform_picks_the_file(tmp_path):
    _model(tmp_path, "m", {1: "model.pt"}, config='platform: "pytorch_export"\n' + CONFIG)
    (tmp_path / "m" / "1" / "model.pt2").write_bytes(b"exported")
    [version] = Repository(tmp_path).read_model("m").versions
    assert version.model_file.name == "model.pt2" and version.export_file is None


def test_no_version_directory_is_a_model_problem(tmp_path):
    _model(tmp_path, "m", {})
    source = Repository(tmp_path).read_model("m")
    assert source.versions == () and "no version directory to serve" in source.problem


def test_bad_config_is_reported_not_raised(tmp_path):
    _model(tmp_path, "m", {1: "model.pt"}, config="max_batch_size: oops\n")
    source = Repository(tmp_path).read_model("m")
    assert source.config is None and "m/config.pbtxt" in source.problem


def test_fingerprint_changes_with_content_not_with_a_touch(tmp_path):
    _model(tmp_path, "m", {1: "model.pt"})
    repository = Repository(tmp_path)
    before = repository.read_model("m").fingerprint()
    (tmp_path / "m" / "config.pbtxt").write_text(CONFIG)  # same bytes again
    assert repository.read_model("m").fingerprint() == before
    (tmp_path / "m" / "config.pbtxt").write_text(CONFIG + "# edited\n")
    edited = repository.read_model("m").fingerprint()
    assert edited != before
    (tmp_path / "m" / "1" / "model.pt").write_bytes(b"new weights, longer")
    assert repository.read_model("m").fingerprint() != edited


def test_links_out_of_the_repository_are_refused(tmp_path):
    root, outside = tmp_path / "repo", tmp_path / "outside"
    root.mkdir()
    _model(outside, "secret", {1: "model.pt"})
    (root / "linked").symlink_to(outside / "secret")
    assert "outside the model repository" in Repository(root).read_model("linked").problem
    _model(root, "m", {})
    (root / "m" / "1").mkdir()
    (root / "m" / "1" / "model.pt").symlink_to(outside / "secret" / "1" / "model.pt")
    [version] = Repository(root).read_model("m").versions
    assert version.model_file is None and "outside the model repository" in version.problem


def test_changed_paths_map_to_their_model(tmp_path):
    repository = Repository(tmp_path)
    assert repository.model_name_of(tmp_path / "m" / "1" / "model.pt") == "m"
    assert repository.model_name_of(tmp_path) is None
    assert repository.model_name_of("/elsewhere/m") is None
