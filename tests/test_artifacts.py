import os

import pytest
import torch

from kx_utils.runtime import artifacts, integrity
from kx_utils.runtime.artifacts import (
    ArtifactStore,
    artifact_kind,
    atomic_save,
    settings_key,
)

artifact_kind("thing", 1)  # the kind these tests store


def test_settings_key_ignores_order_and_sees_values():
    assert settings_key({"a": 1, "b": [1, 2]}) == settings_key({"b": [1, 2], "a": 1})
    assert settings_key({"a": 1}) != settings_key({"a": 2})
    assert settings_key({"lr": 0.1}) != settings_key({"lr": 0.10000001})


def test_cached_computes_once(store):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3)}

    first = store.cached("thing", {"k": 1}, compute)
    second = store.cached("thing", {"k": 1}, compute)
    assert len(calls) == 1
    assert torch.equal(first["x"], second["x"])
    store.cached("thing", {"k": 2}, compute)
    assert len(calls) == 2


def test_a_crash_while_writing_leaves_no_artifact(store, monkeypatch):
    def exploding_save(obj, f):
        f.write(b"half a file")
        raise KeyboardInterrupt  # a kill in the middle of the write

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        store.save("thing", {"k": 1}, {"x": 1})
    monkeypatch.undo()
    assert store.load("thing", {"k": 1}) is None
    folder = store.root / "thing"
    assert not [p for p in folder.iterdir() if p.suffix in (".pt", ".tmp")]


def test_atomic_save_replaces_existing_file(tmp_path):
    path = tmp_path / "a.pt"
    atomic_save({"v": 1}, path)
    atomic_save({"v": 2}, path)
    assert integrity.load(path)["v"] == 2
    assert os.listdir(tmp_path) == ["a.pt"]


def test_a_kinds_version_enters_its_key_and_unknown_kinds_are_refused(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    store.save("thing", {"k": 1}, {"x": 1})
    assert store.load("thing", {"k": 1}) == {"x": 1}
    monkeypatch.setitem(artifacts.ARTIFACT_KINDS, "thing", 2)  # the producing code bumped its version
    assert store.load("thing", {"k": 1}) is None
    with pytest.raises(KeyError, match="register it"):
        store.load("never_registered", {"k": 1})
    import kx_utils.experiments.victims  # noqa: F401 - registers "victim" as its owner does
    version = artifacts.ARTIFACT_KINDS["victim"]
    with pytest.raises(ValueError, match=f"registered twice, as version {version} and {version + 1}"):
        artifact_kind("victim", version + 1)
    assert artifacts.ARTIFACT_KINDS["victim"] == version  # a refused registration changes nothing


# ---------------------------------------------------------------- the versioning rule, enforced


def test_each_kind_remembers_the_module_that_registers_it():
    from kx_utils.runtime.artifact_sources import artifact_sources

    sources = artifact_sources()  # imports the producing modules
    owners = {kind: entry["module"] for kind, entry in sources.items()}
    assert owners == {"victim": "kx_utils.experiments.victims", "answers": "kx_utils.experiments.attack", "surrogate": "kx_utils.experiments.attack",
                      "decoded": "kx_utils.data.datasets", "split_content": "kx_utils.data.datasets", "features": "kx_utils.experiments.detection",
                      "detector": "kx_utils.experiments.detection",
                      "detector_outputs": "kx_utils.experiments.detection",
                      "ood_scores": "kx_utils.experiments.ood_baselines",
                      "baseline_tuning": "kx_utils.experiments.ood_baselines",
                      "filter_benign": "kx_utils.experiments.detection",
                      "prada_streams": "kx_utils.experiments.defences",
                      "dawn_verification": "kx_utils.experiments.defences"}
    assert sources["victim"]["source"] == "kx_utils/experiments/victims.py"
    assert "thing" not in sources  # this file's own kind is not the package's
    assert artifacts.ARTIFACT_OWNERS["thing"].endswith("test_artifacts")
    with pytest.raises(ValueError, match="by kx_utils.experiments.victims and by somewhere.else"):
        artifact_kind("victim", artifacts.ARTIFACT_KINDS["victim"], owner="somewhere.else")


def test_the_checker_asks_for_a_bump_when_a_source_changed_without_its_version():
    from kx_utils.runtime.artifact_sources import (
        RECORD_COMMAND,
        artifact_source_problems,
    )

    entry = {"version": 2, "module": "kx_utils.experiments.attack", "source": "kx_utils/experiments/attack.py", "sha256": "a" * 64}
    now = {"answers": dict(entry)}
    assert artifact_source_problems({"answers": dict(entry)}, now) == []

    changed = artifact_source_problems({"answers": {**entry, "sha256": "b" * 64}}, now)
    assert len(changed) == 1
    assert "kx_utils/experiments/attack.py changed but its artifact kind 'answers' is still version 2" in changed[0]
    assert "artifact_kind('answers', 3)" in changed[0] and RECORD_COMMAND in changed[0]

    bumped = artifact_source_problems({"answers": {**entry, "version": 1, "sha256": "b" * 64}}, now)
    assert len(bumped) == 1 and "bumped from version 1 to 2" in bumped[0] and RECORD_COMMAND in bumped[0]
    lowered = artifact_source_problems({"answers": {**entry, "version": 3}}, now)
    assert len(lowered) == 1 and "only go up" in lowered[0]
    assert "is not recorded" in artifact_source_problems({}, now)[0]
    assert "no module registers it" in artifact_source_problems({"answers": entry, "gone": entry}, now)[0]
    moved = artifact_source_problems({"answers": {**entry, "module": "kx_utils.core.api"}}, now)
    assert len(moved) == 1 and "now registered by kx_utils.experiments.attack" in moved[0]


def test_recording_writes_what_the_check_then_accepts(tmp_path, monkeypatch, capsys):
    import json

    from kx_utils import __main__ as cli
    from kx_utils.runtime import artifact_sources as sources

    target = tmp_path / "artifact_sources.json"
    monkeypatch.setattr(sources, "artifact_sources_path", lambda: target)
    assert cli.main(["artifacts"]) == 1 and "is missing" in capsys.readouterr().err
    assert cli.main(["artifacts", "--record"]) == 0
    recorded = json.loads(target.read_text())["kinds"]
    assert recorded == sources.artifact_sources()
    assert cli.main(["artifacts"]) == 0 and "ok:" in capsys.readouterr().out
    recorded["victim"]["sha256"] = "0" * 64  # victims.py as it was before an edit
    target.write_text(json.dumps({"kinds": recorded}))
    assert cli.main(["artifacts"]) == 1
    assert "kx_utils/experiments/victims.py changed" in capsys.readouterr().out


def test_artifact_versions_move_with_the_source_that_produces_them():
    """The rule of kx_utils/runtime/artifacts.py: a module that registers an artifact kind and changes must
    bump that kind's version, or state (by re-recording) that the change cannot alter the artifacts."""
    import json

    from kx_utils.runtime.artifact_sources import (
        RECORD_COMMAND,
        artifact_source_problems,
        artifact_sources_path,
    )

    path = artifact_sources_path()
    assert path.is_file(), f"{path} is missing: write it with `{RECORD_COMMAND}` and commit it"
    recorded = json.loads(path.read_text())["kinds"]
    problems = artifact_source_problems(recorded)
    assert not problems, ("artifact versions and their source disagree (kx_utils/runtime/artifacts.py states the "
                          "rule):\n  " + "\n  ".join(problems))
