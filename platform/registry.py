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
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from tamor.models.errors import TamorError
from tamor.models.factory import MODEL_FILE, load_model

META_FILE = "version.json"
ALIASES_FILE = "aliases.json"
_VERSION = re.compile(r"^v(\d{4,})$")


class RegistryError(TamorError, LookupError):
    """A version or alias that does not resolve, or a registry that cannot be written."""


@dataclass(frozen=True)
class Version:
    name: str
    path: str  # on the registry's filesystem
    meta: dict[str, Any]

    @property
    def number(self) -> int:
        return int(self.name[1:])


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
        with self.fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())

    def _write_json(self, path: str, value: dict) -> None:
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(value, indent=2, default=str).encode())
        self.fs.move(tmp, path)  # replace in one step: readers see the old file or the new one

    # ------------------------------------------------------------------ reading

    def versions(self) -> list[Version]:
        """Complete versions, oldest first (a directory without ``version.json`` is not a version)."""
        out = []
        for info in self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True)):
            name = info.base_name
            if info.type != pafs.FileType.Directory or not _VERSION.match(name):
                continue
            meta_path = self._path(name, META_FILE)
            if self.fs.get_file_info(meta_path).type == pafs.FileType.File:
                out.append(Version(name, self._path(name), self._read_json(meta_path)))
        return sorted(out, key=lambda v: v.number)

    def aliases(self) -> dict[str, str]:
        path = self._path(ALIASES_FILE)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return {}
        return self._read_json(path)

    def resolve(self, ref: str = "latest") -> Version:
        """A version from ``latest``, ``best``, an alias, or a version name (``v0003`` or ``3``)."""
        versions = self.versions()
        if not versions:
            raise RegistryError(f"the registry at {self.root} has no versions yet")
        by_name = {v.name: v for v in versions}
        if ref == "latest":
            return versions[-1]
        if ref == "best":
            scored = [v for v in versions if v.meta.get("metric_value") is not None]
            if not scored:
                raise RegistryError("no version records a metric to pick the best by")
            return max(scored, key=lambda v: (1 if v.meta.get("mode", "max") == "max" else -1) * v.meta["metric_value"])
        aliases = self.aliases()
        if ref in aliases:
            ref = aliases[ref]
        if ref.isdigit():
            ref = f"v{int(ref):04d}"
        if ref not in by_name:
            known = ", ".join(["latest", "best", *aliases, *by_name])
            raise RegistryError(f"no version or alias {ref!r} (known: {known})")
        return by_name[ref]

    def local_model_file(self, ref: str = "latest", cache_dir: str | Path | None = None) -> Path:
        """The version's ``model.pt`` as a local file (downloaded for remote registries)."""
        version = self.resolve(ref)
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
        model = load_model(model_file)  # validates the file and reads its config, spec and encoder
        versions = self.versions()
        number = versions[-1].number + 1 if versions else 1
        name = f"v{number:04d}"
        tmp = self._path(f".incoming-{name}-{uuid.uuid4().hex[:8]}")
        self.fs.create_dir(tmp, recursive=True)
        pafs.copy_files(str(Path(model_file).resolve()), f"{tmp}/{MODEL_FILE}", destination_filesystem=self.fs)
        meta = {
            "version": name,
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
        self._publish(tmp, self._path(name))
        return self.resolve(name)

    def _publish(self, tmp: str, final: str) -> None:
        if self.fs.get_file_info(final).type != pafs.FileType.NotFound:
            raise RegistryError(f"{final} already exists: another export won the race; retry")
        self.fs.move(tmp, final)

    def promote(self, ref: str, alias: str = "production") -> Version:
        """Point ``alias`` at a version (``latest`` and ``best`` are computed, not settable)."""
        if alias in ("latest", "best") or _VERSION.match(alias):
            raise RegistryError(f"{alias!r} cannot be an alias name")
        version = self.resolve(ref)
        self._write_json(self._path(ALIASES_FILE), {**self.aliases(), alias: version.name})
        return version
