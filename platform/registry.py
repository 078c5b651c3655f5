"""The model registry: a directory (or any pyarrow filesystem URI) of numbered, immutable versions.

::

    registry/
      v0001/  model.pt  version.json   (metrics, config, feature spec, source sweep or run)
      v0002/  ...
      aliases.json                      {"production": "v0002"}

An export is written under a hidden temporary name and then moved into place, with ``version.json``
written last: a crash mid-export leaves no visible half-written version, and ``latest`` keeps
pointing at the previous one. ``latest`` is the newest version, ``best`` the one with the best
recorded metric, and any other alias is set with :meth:`Registry.promote`.

Writes (export, promote) hold ``.lock`` (a file lock), so concurrent processes never lose an alias
or a version number. ``version.json`` records the model file's size and sha256: a version whose
metadata does not parse or whose model file does not match is *corrupt* — listed with its problem,
never resolved (``latest`` and ``best`` skip it) — and one bad entry never breaks the others.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
from filelock import FileLock

from tamor.models.config import MODEL_FILE
from tamor.models.errors import TamorError

META_FILE = "version.json"
ALIASES_FILE = "aliases.json"
LOCK_FILE = ".lock"
_VERSION = re.compile(r"^v(\d{4,})$")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")  # a letter first: an all-digit ref is a version number
INCOMING = ".incoming-"  # a version being staged; one left by a killed export is removed by the next export


class RegistryError(TamorError, LookupError):
    """A version or alias that does not resolve, or a registry that cannot be written."""


@dataclass(frozen=True)
class Version:
    name: str
    path: str  # on the registry's filesystem
    meta: dict[str, Any]
    problem: str | None = None  # why the version is corrupt; None when it is whole

    @property
    def number(self) -> int:
        return int(self.name[1:])


def file_digest(stream) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a readable binary stream."""
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


class Registry:
    def __init__(self, root: str | Path):
        root = str(root)
        if "://" in root:
            self.fs, self.root = pafs.FileSystem.from_uri(root)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), str(Path(root).resolve())
        # nothing is created until something is written: a mistyped path stays an empty answer, not a directory

    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def _read_json(self, path: str) -> dict:
        try:
            with self.fs.open_input_stream(path) as f:
                value = json.loads(f.read().decode())
        except (ValueError, UnicodeDecodeError) as e:
            raise RegistryError(f"{path} is corrupt ({e})") from None
        if not isinstance(value, dict):
            raise RegistryError(f"{path} is corrupt (not a JSON object)")
        return value

    @contextmanager
    def _locked(self):
        """Serialise writers across processes (local registries; object stores have no file locks)."""
        if not isinstance(self.fs, pafs.LocalFileSystem):
            yield
            return
        self.fs.create_dir(self.root, recursive=True)
        with FileLock(self._path(LOCK_FILE), timeout=60):
            yield

    def _write_json(self, path: str, value: dict) -> None:
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(value, indent=2, default=str).encode())
        self.fs.move(tmp, path)  # replace in one step: readers see the old file or the new one

    # ------------------------------------------------------------------ reading

    def versions(self, include_corrupt: bool = False) -> list[Version]:
        """Complete versions, oldest first (a directory without ``version.json`` is not a version);
        corrupt ones (see :meth:`check`) only with ``include_corrupt``."""
        out = []
        for info in self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True)):
            name = info.base_name
            if info.type != pafs.FileType.Directory or not _VERSION.match(name):
                continue
            meta_path = self._path(name, META_FILE)
            if self.fs.get_file_info(meta_path).type != pafs.FileType.File:
                continue
            try:
                version = Version(name, self._path(name), self._read_json(meta_path))
            except RegistryError as e:
                version = Version(name, self._path(name), {}, problem=str(e))
            if version.problem is None:
                version = Version(version.name, version.path, version.meta, problem=self._size_problem(version))
            if include_corrupt or version.problem is None:
                out.append(version)
        return sorted(out, key=lambda v: v.number)

    def _size_problem(self, version: Version) -> str | None:
        """A cheap check on every listing: the model file is there and as long as when exported."""
        info = self.fs.get_file_info(self._path(version.name, MODEL_FILE))
        if info.type != pafs.FileType.File:
            return f"{MODEL_FILE} is missing"
        expected = version.meta.get("model_bytes")
        if expected is not None and info.size != expected:
            return f"{MODEL_FILE} is {info.size} bytes, {expected} when exported (truncated or replaced)"
        return None

    def check(self, ref: str) -> Version:
        """Resolve ``ref`` and verify its model file's sha256 against ``version.json``; raises if corrupt."""
        version = self.resolve(ref)
        expected = version.meta.get("model_sha256")
        if expected is not None:
            with self.fs.open_input_stream(self._path(version.name, MODEL_FILE)) as f:
                _, digest = file_digest(f)
            if digest != expected:
                raise RegistryError(f"version {version.name}: {MODEL_FILE} does not match its recorded sha256 (corrupt)")
        return version

    def aliases(self) -> dict[str, str]:
        path = self._path(ALIASES_FILE)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return {}
        return self._read_json(path)

    def resolve(self, ref: str = "latest") -> Version:
        """A version from ``latest``, ``best``, an alias, or a version name (``v0003`` or ``3``);
        ``latest`` and ``best`` consider whole versions only, and naming a corrupt one is an error."""
        every = self.versions(include_corrupt=True)
        versions = [v for v in every if v.problem is None]
        if not versions and not every:
            raise RegistryError(f"the registry at {self.root} has no versions yet")
        by_name = {v.name: v for v in versions}
        corrupt = {v.name: v.problem for v in every if v.problem is not None}
        if ref == "latest":
            if not versions:
                raise RegistryError(f"the registry at {self.root} has no whole version (corrupt: {corrupt})")
            return versions[-1]
        if ref == "best":
            scored = [v for v in versions if v.meta.get("metric_value") is not None]
            if not scored:
                raise RegistryError("no version records a metric to pick the best by")
            return max(scored, key=lambda v: (1 if v.meta.get("mode", "max") == "max" else -1) * v.meta["metric_value"])
        aliases = self.aliases() if not (_VERSION.match(ref) or ref.isdigit()) else {}
        if ref in aliases:
            ref = aliases[ref]
        if ref.isdigit():
            ref = f"v{int(ref):04d}"
        if ref in corrupt:
            raise RegistryError(f"version {ref} is corrupt: {corrupt[ref]}")
        if ref not in by_name:
            try:
                aliases = aliases or self.aliases()
            except RegistryError:
                aliases = {}
            known = ", ".join(["latest", "best", *aliases, *by_name])
            raise RegistryError(f"no version or alias {ref!r} (known: {known})")
        return by_name[ref]

    def local_model_file(self, ref: str = "latest", cache_dir: str | Path | None = None) -> Path:
        """The version's ``model.pt`` as a local file (downloaded for remote registries), its sha256 checked."""
        version = self.check(ref)
        if isinstance(self.fs, pafs.LocalFileSystem):
            return Path(version.path) / MODEL_FILE
        target = Path(cache_dir or Path.home() / ".cache" / "tamor" / "registry") / version.name
        target.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(f"{version.path}/{MODEL_FILE}", str(target / MODEL_FILE), source_filesystem=self.fs)
        return target / MODEL_FILE

    # ------------------------------------------------------------------ writing

    def export(
        self,
        model_file: str | Path,
        metrics: dict[str, float],
        metric: str,
        mode: str = "max",
        source: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Version:
        """Publish ``model_file`` (a saved tamor model) as the next version, atomically."""
        value = metrics.get(metric)
        if value is not None and not math.isfinite(value):
            raise RegistryError(f"metric {metric} is {value}: a version needs a finite metric (a NaN would be `best` for good)")
        from tamor.models.factory import load_model  # torch: only an export reads a model, not the registry's readers

        model = load_model(model_file)  # validates the file and reads its config, spec and encoder
        with open(model_file, "rb") as f:
            size, digest = file_digest(f)
        with self._locked():
            self._remove_stale_incoming()
            versions = self.versions(include_corrupt=True)  # a corrupt version still owns its number
            number = versions[-1].number + 1 if versions else 1
            name = f"v{number:04d}"
            tmp = self._path(f"{INCOMING}{name}-{uuid.uuid4().hex[:8]}")
            try:
                self._stage(model_file, model, tmp, name, size, digest, metrics, metric, mode, source, extra)
                self._publish(tmp, self._path(name))
            except BaseException:
                self.fs.delete_dir_contents(tmp, missing_dir_ok=True)
                if self.fs.get_file_info(tmp).type == pafs.FileType.Directory:
                    self.fs.delete_dir(tmp)
                raise
        return self.resolve(name)

    def stale_incoming(self) -> list[str]:
        """Staging directories left by exports that never finished (listed by `tamor registry list`)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return [i.path for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith(INCOMING)]

    def _remove_stale_incoming(self) -> None:
        """Under the lock no other export is staging (local registries), so every staging directory is stale."""
        if isinstance(self.fs, pafs.LocalFileSystem):
            for path in self.stale_incoming():
                self.fs.delete_dir(path)

    def _stage(self, model_file, model, tmp: str, name: str, size: int, digest: str, metrics: dict[str, float], metric: str,
               mode: str, source: dict[str, Any] | None, extra: dict[str, Any] | None) -> None:
        self.fs.create_dir(tmp, recursive=True)
        pafs.copy_files(str(Path(model_file).resolve()), f"{tmp}/{MODEL_FILE}", destination_filesystem=self.fs)
        meta = {
            "version": name,
            "model_bytes": size,
            "model_sha256": digest,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "metric": metric,
            "mode": mode,
            "metric_value": metrics.get(metric),
            "metrics": metrics,
            "config": model.config.model_dump(),
            "feature_spec": model.spec.model_dump(),
            "encoder": model.encoder.fingerprint if model.encoder is not None else None,
            "source": source or {},
            **(extra or {}),
        }
        self._write_json(f"{tmp}/{META_FILE}", meta)

    def _publish(self, tmp: str, final: str) -> None:
        if self.fs.get_file_info(final).type != pafs.FileType.NotFound:
            raise RegistryError(f"{final} already exists: another export won the race; retry")
        self.fs.move(tmp, final)

    def promote(self, ref: str, alias: str = "production") -> Version:
        """Point ``alias`` at a version (``latest`` and ``best`` are computed, not settable)."""
        if alias in ("latest", "best") or _VERSION.match(alias) or not _ALIAS.fullmatch(alias):
            raise RegistryError(f"{alias!r} cannot be an alias name: a letter, then up to 63 letters, digits, '_', '.' or '-'; "
                                "not 'latest', 'best' or a version name")
        with self._locked():  # read-modify-write of aliases.json: one writer at a time, or an alias is lost
            version = self.resolve(ref)
            try:
                aliases = self.aliases()
            except RegistryError:  # a corrupt aliases file: start again from this alias rather than fail forever
                aliases = {}
            self._write_json(self._path(ALIASES_FILE), {**aliases, alias: version.name})
        return version
