"""The preprocessed data directory's layout, named once.

::

    data/
      train/ valid/ test/        encoded Parquet shards (columns: see FeatureSpec)
      feature_spec.json          the model's view: fields, sizes, tiers, scenarios, tasks
      encoder.json               the one raw → model-input encoder (vocabularies, statistics, tiers)
      online/users online/items  the latest encoded row per user and per item (the feature store)
      quarantine/                rejected rows with their reason
      stats.json                 row counts, reasons, split cut points
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tamor.models.encoder import ENCODER_FILE, Encoder
from tamor.models.feature_spec import SPEC_FILE, FeatureSpec

SPLITS = ("train", "valid", "test")
ONLINE_KINDS = ("users", "items")


@dataclass(frozen=True)
class DataDir:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def spec_file(self) -> Path:
        return self.root / SPEC_FILE

    @property
    def encoder_file(self) -> Path:
        return self.root / ENCODER_FILE

    @property
    def stats_file(self) -> Path:
        return self.root / "stats.json"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def staging(self) -> Path:
        return self.root / "_staging"

    @property
    def encoded_staging(self) -> Path:
        return self.root / "_encoded"

    def split(self, name: str) -> Path:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return self.root / name

    def online(self, kind: str | None = None) -> Path:
        if kind is not None and kind not in ONLINE_KINDS:
            raise ValueError(f"online kind must be one of {ONLINE_KINDS}, got {kind!r}")
        return self.root / "online" if kind is None else self.root / "online" / kind

    @property
    def raw_test(self) -> Path:
        """The test split's checked raw rows: to score a model that encodes features its own way
        (the production model of an earlier encoder) on exactly these rows."""
        return self.root / "test_raw"

    @property
    def train_staging(self) -> Path:
        """The train split rewritten with its teacher columns, before it is swapped in."""
        return self.root / "_train"

    @property
    def source_copy(self) -> Path:
        return self.root / "_source"

    def written(self) -> list[Path]:
        """Every path preprocessing writes here (what a failed run's cleanup may remove)."""
        paths = [self.staging, self.encoded_staging, self.train_staging, self.source_copy, self.quarantine, self.online(),
                 self.spec_file, self.encoder_file, self.stats_file, self.raw_test]
        return paths + [self.split(s) for s in SPLITS]

    def exists(self) -> bool:
        return self.spec_file.exists()

    def spec(self) -> FeatureSpec:
        return FeatureSpec.load(self.spec_file)

    def encoder(self) -> Encoder:
        return Encoder.load(self.encoder_file)
