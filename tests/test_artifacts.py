from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from recommender import artifacts
from recommender.errors import ArtifactError

ARRAYS = {
    "item_ids": np.array(["85123A", "00042", "caf\u00e9"]),
    "table.scores": np.array([[0.5, 0.25], [1.0, 0.0], [0.0, 0.0]], dtype=np.float32),
}


def save(models_dir: Path, **extra) -> Path:
    return artifacts.save(models_dir, ARRAYS, {"params": {"k": 2}, **extra}, keep_versions=3)


def test_round_trip_is_memory_mapped_and_verified(tmp_path: Path) -> None:
    path = save(tmp_path)
    assert artifacts.current_version(tmp_path) == path.name
    loaded = artifacts.load_current(tmp_path)
    assert loaded.version == path.name
    assert loaded.manifest["params"] == {"k": 2}
    assert loaded.manifest["schema_version"] == artifacts.SCHEMA_VERSION
    assert loaded.arrays["item_ids"].tolist() == ["85123A", "00042", "caf\u00e9"]
    np.testing.assert_array_equal(loaded.arrays["table.scores"], ARRAYS["table.scores"])
    assert isinstance(loaded.arrays["table.scores"], np.memmap)
    entry = loaded.manifest["files"]["table.scores.npy"]
    assert entry["shape"] == [3, 2] and entry["dtype"] == "<f4" and len(entry["sha256"]) == 64


def flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: flip_byte(d / "table.scores.npy"), "checksum mismatch"),
        (
            lambda d: (d / "item_ids.npy").write_bytes((d / "item_ids.npy").read_bytes()[:50]),
            "checksum mismatch",
        ),
        (lambda d: (d / "item_ids.npy").unlink(), "cannot read"),
        (lambda d: (d / "manifest.json").write_text("{"), "unreadable"),
        (
            lambda d: edit_manifest(d, lambda m: m.update(schema_version=99)),
            "unsupported schema_version",
        ),
        (
            lambda d: edit_manifest(
                d, lambda m: m["files"]["table.scores.npy"].update(shape=[2, 3])
            ),
            "shape or dtype",
        ),
        (
            lambda d: edit_manifest(d, lambda m: m["files"].update({"../x.npy": {}})),
            "bad file name",
        ),
    ],
)
def test_damaged_versions_are_refused(tmp_path: Path, damage, message: str) -> None:
    path = save(tmp_path)
    damage(path)
    with pytest.raises(ArtifactError, match=message):
        artifacts.load(path)


def edit_manifest(path: Path, change) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_failed_write_promotes_nothing_and_leaves_no_debris(tmp_path: Path, monkeypatch) -> None:
    first = save(tmp_path)
    calls = []

    def full_disk(handle, array, allow_pickle=False):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_save(handle, array, allow_pickle=allow_pickle)

    real_save = np.save
    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(ArtifactError, match="No space left on device"):
        save(tmp_path)
    assert artifacts.current_version(tmp_path) == first.name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, "current"])
    artifacts.load_current(tmp_path)


def test_interrupt_during_write_leaves_current_alone(tmp_path: Path, monkeypatch) -> None:
    first = save(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts, "_write_durably", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path)
    assert artifacts.current_version(tmp_path) == first.name
    assert not list(tmp_path.glob(".tmp-*"))


def test_debris_of_a_killed_run_is_removed_by_the_next(tmp_path: Path) -> None:
    first = save(tmp_path)
    dead = tmp_path / ".tmp-20200101T000000.000000Z-999999999"
    dead.mkdir()
    (dead / "item_ids.npy").write_bytes(b"half")
    assert artifacts.versions(tmp_path) == [first.name]  # debris is never a version
    second = save(tmp_path)
    assert not dead.exists()
    assert artifacts.current_version(tmp_path) == second.name


def test_old_versions_are_pruned_but_never_current(tmp_path: Path) -> None:
    made = [save(tmp_path).name for _ in range(5)]
    assert made == sorted(set(made))
    assert artifacts.versions(tmp_path) == made[-3:]
    artifacts.promote(tmp_path, made[-3])
    assert artifacts.prune(tmp_path, 1) == made[-2:]
    assert artifacts.versions(tmp_path) == [made[-3]]


def test_object_arrays_and_odd_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="object arrays"):
        artifacts.save(tmp_path, {"bad": np.array([{"a": 1}], dtype=object)}, {})
    with pytest.raises(ArtifactError, match="only letters"):
        artifacts.save(tmp_path, {"../escape": np.zeros(1)}, {})
    assert artifacts.current_version(tmp_path) is None


def test_no_model_yet(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no trained model yet"):
        artifacts.load_current(tmp_path)
    assert artifacts.versions(tmp_path / "absent") == []
    os.symlink("20990101T000000.000000Z", tmp_path / "current")
    with pytest.raises(ArtifactError, match="no manifest.json"):
        artifacts.load_current(tmp_path)


def test_streamed_arrays_are_written_chunk_by_chunk_and_verified(tmp_path: Path) -> None:
    chunks = (np.full((rows, 2), value, dtype=np.float32) for value, rows in ((1.0, 2), (2.0, 3)))
    path = artifacts.save(
        tmp_path,
        {**ARRAYS, "als.user_factors": artifacts.StreamedArray((5, 2), np.float32, chunks)},
        {},
    )
    loaded = artifacts.load(path).arrays["als.user_factors"]
    assert loaded.tolist() == [[1.0, 1.0]] * 2 + [[2.0, 2.0]] * 3
    empty = artifacts.save(
        tmp_path, {**ARRAYS, "none": artifacts.StreamedArray((0, 2), np.float32, iter(()))}, {}
    )
    assert artifacts.load(empty).arrays["none"].shape == (0, 2)


@pytest.mark.parametrize("rows", [(2, 2), (2, 4)])
def test_streamed_chunks_that_do_not_fill_the_shape_promote_nothing(
    tmp_path: Path, rows: tuple[int, ...]
) -> None:
    first = save(tmp_path)
    chunks = (np.zeros((n, 2), dtype=np.float32) for n in rows)
    with pytest.raises(ArtifactError, match="als.user_factors"):
        artifacts.save(
            tmp_path,
            {**ARRAYS, "als.user_factors": artifacts.StreamedArray((5, 2), np.float32, chunks)},
            {},
        )
    assert artifacts.current_version(tmp_path) == first.name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, "current"])
