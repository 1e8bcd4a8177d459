"""Versioned model directories on disk: the only module that reads or writes model files.

One training run writes ``<models_dir>/<version>/``: one ``.npy`` file per array (so the
server can memory-map it), and ``manifest.json`` with the version, parameters, data
fingerprint, cleaning report and the SHA-256 of every file. The run is written into a
hidden temporary directory, fsynced, renamed into place, verified, and only then promoted
by atomically replacing the ``current`` symlink. A run that fails or is killed at any point
leaves ``current`` pointing at the previous, complete version. Loading never unpickles.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .bundle import ModelBundle
from .errors import ArtifactError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
CURRENT = "current"
_TMP_PREFIX = ".tmp-"
# A file in a version's directory: an experiment serves this version, so pruning keeps it.
PINNED = "pinned"
_VERSION_FORMAT = "%Y%m%dT%H%M%S.%fZ"
_VERSION_PATTERN = re.compile(r"^\d{8}T\d{6}\.\d{6}Z$")
_ARRAY_NAME = re.compile(r"^[A-Za-z0-9_.]+$")
_DOCUMENT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class StreamedArray:
    """An array too large to hold in memory at once, written chunk by chunk.

    ``chunks`` yields consecutive blocks along the first axis (each a numpy array of
    ``dtype``) whose lengths add up to ``shape[0]``; a distributed trainer streams, for
    example, millions of user factors from its workers this way.
    """

    shape: tuple[int, ...]
    dtype: Any
    chunks: Iterable[NDArray[Any]]


@dataclass(frozen=True)
class Artifact:
    """A loaded, verified model version: its manifest and its (memory-mapped) arrays."""

    version: str
    path: Path
    manifest: dict[str, Any]
    arrays: dict[str, NDArray[Any]]


def save(
    models_dir: str | Path,
    arrays: Mapping[str, NDArray[Any] | StreamedArray],
    manifest: dict[str, Any],
    keep_versions: int = 5,
    documents: dict[str, bytes] | None = None,
    promote_it: bool = True,
) -> Path:
    """Write a new version, verify it, promote it to ``current`` and prune old versions.

    Parameters
    ----------
    models_dir : directory holding the versions and the ``current`` link (created if missing).
    arrays : name -> array (or ``StreamedArray``); names are ``[A-Za-z0-9_.]+``; object arrays
        are refused.
    manifest : JSON-serialisable metadata; ``version``, ``created_at``, ``schema_version``
        and ``files`` are filled in here.
    keep_versions : versions kept on disk, the current one included.
    documents : other files of the version (``evaluation.json``, ``report.html``), checksummed too.
    promote_it : False writes and verifies the version without promoting it (a refused run
        stays on disk for inspection until pruned).

    Returns
    -------
    Path of the promoted version directory.

    Raises
    ------
    ArtifactError
        The write or the verification failed; nothing was promoted and the temporary
        directory is removed.

    Long because writing, verifying, promoting and pruning are one all-or-nothing sequence:
    any failure removes the half-written version.
    """
    models_dir = Path(models_dir)
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArtifactError(
            f"{models_dir}: cannot create models directory: {exc.strerror}"
        ) from None
    _remove_stale_temporaries(models_dir)
    version = _new_version(models_dir)
    staging = models_dir / f"{_TMP_PREFIX}{version}-{os.getpid()}"
    try:
        staging.mkdir()
        files = {}
        for name, array in arrays.items():
            files[name + ".npy"] = _write_array(staging / (name + ".npy"), name, array)
        extra = {}
        for name, payload in (documents or {}).items():
            if not _DOCUMENT_NAME.match(name) or name == MANIFEST:
                raise ArtifactError(f"document name {name!r}: expected a plain file name")
            _write_durably(staging / name, payload)
            extra[name] = {"sha256": _sha256(staging / name), "bytes": len(payload)}
        document = {
            **manifest,
            "schema_version": SCHEMA_VERSION,
            "version": version,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "files": files,
            "documents": extra,
        }
        _write_durably(staging / MANIFEST, json.dumps(document, indent=2, sort_keys=True).encode())
        _fsync_directory(staging)
        final = models_dir / version
        os.rename(staging, final)
        _fsync_directory(models_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ArtifactError(f"{models_dir}: cannot write model version {version}: {exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    load(final)
    if promote_it:
        promote(models_dir, version)
    prune(models_dir, keep_versions)
    logger.info(
        "saved %s model version %s (%d arrays)",
        "and promoted" if promote_it else "(not promoted)",
        version,
        len(arrays),
    )
    return final


def promote(models_dir: str | Path, version: str) -> None:
    """Point ``current`` at ``version`` atomically (symlink written aside, then ``os.replace``)."""
    models_dir = Path(models_dir)
    if not (models_dir / version / MANIFEST).is_file():
        raise ArtifactError(f"{models_dir / version}: not a complete model version")
    pointer = models_dir / f"{_TMP_PREFIX}{CURRENT}-{os.getpid()}"
    pointer.unlink(missing_ok=True)
    os.symlink(version, pointer)
    os.replace(pointer, models_dir / CURRENT)
    _fsync_directory(models_dir)


def read_document(models_dir: str | Path, version: str, name: str) -> bytes | None:
    """A document of a version (``report.html``, ``evaluation.json``), or None if it has none."""
    if not _VERSION_PATTERN.match(version) or not _DOCUMENT_NAME.match(name):
        return None
    try:
        return (Path(models_dir) / version / name).read_bytes()
    except OSError:
        return None


def read_manifest(models_dir: str | Path, version: str) -> dict[str, Any] | None:
    """The manifest of a version without loading its arrays, or None."""
    payload = read_document(models_dir, version, MANIFEST)
    try:
        return json.loads(payload) if payload else None
    except ValueError:
        return None


def current_version(models_dir: str | Path) -> str | None:
    """The version ``current`` points at, or None when no model has been promoted."""
    try:
        return os.readlink(Path(models_dir) / CURRENT)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise ArtifactError(f"{Path(models_dir) / CURRENT}: unreadable: {exc.strerror}") from None


def versions(models_dir: str | Path) -> list[str]:
    """Complete versions on disk, oldest first."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    return sorted(
        entry.name
        for entry in models_dir.iterdir()
        if _VERSION_PATTERN.match(entry.name) and (entry / MANIFEST).is_file()
    )


def pin(models_dir: str | Path, version: str, pinned: bool) -> bool:
    """Mark a version as served by an experiment (or no longer), so ``prune`` keeps it
    whatever its age. False when the mark cannot be written (a read-only models directory:
    then ``keep_versions`` alone protects it)."""
    path = Path(models_dir) / version
    if not _VERSION_PATTERN.match(version) or not (path / MANIFEST).is_file():
        return False
    try:
        if pinned:
            (path / PINNED).touch()
        else:
            (path / PINNED).unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("cannot %s model version %s: %s", "pin" if pinned else "unpin", version, exc)
        return False
    return True


def prune(models_dir: str | Path, keep_versions: int) -> list[str]:
    """Delete the oldest versions beyond ``keep_versions``; never the current one, nor one
    an experiment serves (``pin``)."""
    current = current_version(models_dir)
    candidates = [
        v
        for v in versions(models_dir)
        if v != current and not (Path(models_dir) / v / PINNED).exists()
    ]
    surplus = len(candidates) - (keep_versions - (1 if current else 0))
    removed = candidates[: max(0, surplus)]
    for version in removed:
        shutil.rmtree(Path(models_dir) / version, ignore_errors=True)
        logger.info("pruned old model version %s", version)
    return removed


def load_current(models_dir: str | Path) -> Artifact:
    """Load the version ``current`` points at; ``ArtifactError`` if there is none or it is broken."""
    return load(_current_path(models_dir))


def load_current_bundle(models_dir: str | Path) -> ModelBundle:
    """``load_bundle`` of the version ``current`` points at."""
    return load_bundle(_current_path(models_dir))


def _current_path(models_dir: str | Path) -> Path:
    version = current_version(models_dir)
    if version is None:
        raise ArtifactError(
            f"{models_dir}: no trained model yet (no '{CURRENT}' link); run make train"
        )
    return Path(models_dir) / version


def load_bundle(path: str | Path) -> ModelBundle:
    """Load and verify one version directory as a ``ModelBundle`` over memory-mapped arrays."""
    artifact = load(path)
    try:
        return ModelBundle.from_arrays(
            artifact.arrays, {**artifact.manifest, "version": artifact.version}
        )
    except ArtifactError as exc:
        raise ArtifactError(f"{artifact.path}: {exc}") from None


def load(path: str | Path) -> Artifact:
    """Load and verify one version directory; arrays are memory-mapped read-only.

    Raises
    ------
    ArtifactError
        Missing or unreadable manifest, unknown schema version, a missing file, a checksum,
        dtype or shape that does not match the manifest.
    """
    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no {MANIFEST}") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path / MANIFEST}: unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path / MANIFEST}: unsupported schema_version (expected {SCHEMA_VERSION})"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"{path / MANIFEST}: no file list")
    arrays = {}
    digests = _digests(
        [path / name for name in files if _ARRAY_NAME.match(name.removesuffix(".npy"))]
    )
    for filename, expected in files.items():
        file_path = path / filename
        if not _ARRAY_NAME.match(filename.removesuffix(".npy")) or not filename.endswith(".npy"):
            raise ArtifactError(f"{path / MANIFEST}: bad file name {filename!r}")
        digest = digests[file_path]
        if isinstance(digest, OSError):
            raise ArtifactError(f"{file_path}: cannot read: {digest.strerror}") from None
        if digest != expected.get("sha256"):
            raise ArtifactError(f"{file_path}: checksum mismatch (file changed or corrupted)")
        try:
            array = np.load(file_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{file_path}: not a valid array: {exc}") from None
        if list(array.shape) != expected.get("shape") or array.dtype.str != expected.get("dtype"):
            raise ArtifactError(f"{file_path}: shape or dtype differs from the manifest")
        arrays[filename.removesuffix(".npy")] = array
    for name, expected in (manifest.get("documents") or {}).items():
        if not _DOCUMENT_NAME.match(name):
            raise ArtifactError(f"{path / MANIFEST}: bad document name {name!r}")
        try:
            if _sha256(path / name) != expected.get("sha256"):
                raise ArtifactError(f"{path / name}: checksum mismatch (file changed or corrupted)")
        except OSError as exc:
            raise ArtifactError(f"{path / name}: cannot read: {exc.strerror}") from None
    return Artifact(
        version=str(manifest.get("version", path.name)), path=path, manifest=manifest, arrays=arrays
    )


def _write_array(path: Path, name: str, array: NDArray[Any] | StreamedArray) -> dict[str, Any]:
    if not _ARRAY_NAME.match(name):
        raise ArtifactError(f"array name {name!r}: only letters, digits, '_' and '.' are allowed")
    if isinstance(array, StreamedArray):
        return _write_streamed(path, name, array)
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise ArtifactError(f"array {name!r}: object arrays cannot be saved without pickle")
    with open(path, "wb") as handle:
        hashing = _HashingWriter(handle)
        # The same bytes, checksummed as they go out rather than read back (a 20M-line
        # version is 1.5 GB; ``load`` still verifies the file).
        np.save(hashing, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    return {
        "sha256": hashing.hexdigest(),
        "shape": list(array.shape),
        "dtype": array.dtype.str,
        "bytes": path.stat().st_size,
    }


def _write_streamed(path: Path, name: str, streamed: StreamedArray) -> dict[str, Any]:
    dtype = np.dtype(streamed.dtype)
    if dtype.hasobject:
        raise ArtifactError(f"array {name!r}: object arrays cannot be saved without pickle")
    if not streamed.shape[0]:  # an empty file cannot be memory-mapped
        return _write_array(path, name, np.empty(streamed.shape, dtype=dtype))
    # Appended chunk by chunk through the page cache, not a writable memory map: mapped dirty
    # pages would count in the process's resident memory until the whole array is written.
    with open(path, "wb") as raw:
        handle = _HashingWriter(raw)
        np.lib.format.write_array_header_2_0(
            handle,
            {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": False,
                "shape": tuple(streamed.shape),
            },
        )
        filled = 0
        for chunk in streamed.chunks:
            chunk = np.ascontiguousarray(chunk, dtype=dtype)
            if filled + len(chunk) > streamed.shape[0] or chunk.shape[1:] != tuple(
                streamed.shape[1:]
            ):
                raise ArtifactError(
                    f"array {name!r}: chunks do not fit the declared shape {streamed.shape}"
                )
            handle.write(chunk.data.cast("B"))
            filled += len(chunk)
        if filled != streamed.shape[0]:
            raise ArtifactError(
                f"array {name!r}: chunks filled {filled} of {streamed.shape[0]} rows"
            )
        raw.flush()
        os.fsync(raw.fileno())
    return {
        "sha256": handle.hexdigest(),
        "shape": list(streamed.shape),
        "dtype": dtype.str,
        "bytes": path.stat().st_size,
    }


def _write_durably(path: Path, payload: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class _HashingWriter:
    """A binary file that keeps the SHA-256 of what is written to it."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()

    def write(self, data: Any) -> int:
        self._digest.update(data)
        return int(self._handle.write(data))

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _digests(paths: list[Path]) -> dict[Path, str | OSError]:
    """``_sha256`` of each file, or the error reading it, the files hashed on several threads:
    hashing releases the GIL, and a large version (1.5 GB of arrays at 20M lines) is read
    back whole to be verified, after every save and before every serve."""
    if len(paths) < 2:
        return {path: _digest_or_error(path) for path in paths}
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return dict(zip(paths, pool.map(_digest_or_error, paths)))


def _digest_or_error(path: Path) -> str | OSError:
    try:
        return _sha256(path)
    except OSError as exc:
        return exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _new_version(models_dir: Path) -> str:
    """A UTC timestamp to the microsecond, later than every version ever written here.

    Versions sort by name in the order they were made, even when the clock steps back or
    two runs finish within the same microsecond, so a pruned name is never reused.
    """
    moment = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    names = [
        entry.name.removeprefix(_TMP_PREFIX).rsplit("-", 1)[0] for entry in models_dir.iterdir()
    ]
    existing = [
        dt.datetime.strptime(name, _VERSION_FORMAT)
        for name in names
        if _VERSION_PATTERN.match(name)
    ]
    latest_pointer = current_version(models_dir)
    if latest_pointer and _VERSION_PATTERN.match(latest_pointer):
        existing.append(dt.datetime.strptime(latest_pointer, _VERSION_FORMAT))
    if existing and moment <= max(existing):
        moment = max(existing) + dt.timedelta(microseconds=1)
    return moment.strftime(_VERSION_FORMAT)


def _remove_stale_temporaries(models_dir: Path) -> None:
    """Remove staging directories of runs that died (their process no longer exists)."""
    for entry in models_dir.glob(_TMP_PREFIX + "*"):
        pid = entry.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            if entry.is_symlink() or entry.is_file():
                entry.unlink(missing_ok=True)
            else:
                shutil.rmtree(entry, ignore_errors=True)
            logger.info("removed %s left by an interrupted run", entry.name)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
