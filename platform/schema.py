"""The tiered-log contract: a declarative YAML schema naming each column's role.

Any log — the synthetic world, a public dataset, a company's own — is brought in by writing one of
these files (see ``platform/schemas/``), not code. Validation errors name the offending field.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tamor.models.errors import TamorError
from tamor.models.feature_spec import Side

SCHEMA_DIR = Path(__file__).parent / "schemas"


class SchemaError(TamorError, ValueError):
    """A schema file that cannot be used, with a message that says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CsvOptions(_Strict):
    header: bool = True
    column_names: list[str] | None = None  # required when header is false
    delimiter: str = ","
    strip: bool = True  # strip surrounding whitespace from every value


class Source(_Strict):
    format: Literal["csv", "parquet", "json"] = "parquet"
    csv: CsvOptions = CsvOptions()


class Ids(_Strict):
    user: str | None = Field(None, description="user id column; None makes each row its own user (id: a hash of the raw row)")
    item: str | None = Field(None, description="item id column; None uses the scenario as the item")


class Feature(_Strict):
    column: str
    side: Side
    type: Literal["categorical", "numeric"]
    log1p: bool = False  # numeric only: standardise log1p(x), for heavy-tailed amounts


class Tiers(_Strict):
    """A user's tier: the number of ``thresholds`` at or below the holdings amount, or, with ``values``,
    the tier a raw value (a flag or a category) names."""

    column: str
    names: list[str] = ["new", "low", "high"]
    thresholds: list[float] = [0.01, 100.0]
    values: dict[str, str] | None = Field(None, description="raw value → tier name (e.g. {'1': new, '0': low}); replaces thresholds")
    signed: bool = Field(False, description="negative amounts are valid (they fall in the lowest tier), e.g. a balance")
    feature: bool = Field(True, description="the tier column is also a user feature (numeric log1p, or categorical with values)")

    @model_validator(mode="after")
    def _check(self) -> Tiers:
        if self.values is not None:
            unknown = set(self.values.values()) - set(self.names)
            if unknown:
                raise ValueError(f"tiers.values: names {sorted(unknown)} are not among tiers.names {self.names}")
            return self
        if len(self.names) != len(self.thresholds) + 1:
            raise ValueError(
                f"tiers: {len(self.names)} names need {len(self.names) - 1} thresholds, "
                f"got {len(self.thresholds)}"
            )
        if sorted(self.thresholds) != self.thresholds:
            raise ValueError("tiers: thresholds must be increasing")
        return self


class Scenario(_Strict):
    column: str
    values: list[str] | None = None  # when given, other values are quarantined as unknown_scenario
    feature: bool = Field(True, description="the scenario is also an item feature (categorical) for every model")


class Task(_Strict):
    name: str
    column: str | None  # None: the dataset lacks this label (declared absent, never faked)
    level: Literal["item", "user"] = "item"
    after: str | None = None  # the previous step of the action chain: this label needs it to be 1
    tiers: list[str] | None = None  # tiers where this task is an objective; None = all
    positive: list[str] | str | None = Field(
        None, description="raw values meaning 1 (others 0), or a comparison such as '> 100'; None: values must be 0/1"
    )

    @model_validator(mode="after")
    def _check_positive(self) -> Task:
        if isinstance(self.positive, str) and comparison(self.positive) is None:
            raise ValueError(f"task {self.name!r}: positive {self.positive!r} is not a comparison such as '> 100'; "
                             "for category values give a list")
        if isinstance(self.positive, list):
            looks = [v for v in self.positive if _COMPARISON.match(v) or v.strip()[:1] in "<>=!"]
            if looks:
                raise ValueError(f"task {self.name!r}: positive {looks} looks like a comparison: write positive: '{looks[0]}' "
                                 "(a string, not a list)")
        return self


_COMPARISON = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$")
_OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}


def comparison(text: str) -> tuple[Callable[[Any, Any], Any], float] | None:
    """``'> 100'`` → ``(operator.gt, 100.0)``; None when ``text`` is not a comparison with a number."""
    match = _COMPARISON.match(text)
    return (_OPERATORS[match.group(1)], float(match.group(2))) if match else None


class Split(_Strict):
    """``time``: by timestamp, each split a fraction of the rows; ``hash``: by a hash of the row. The
    default is ``time`` when the log has a timestamp, else ``hash``."""

    by: Literal["time", "hash"] | None = None
    valid_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)


class Preprocess(_Strict):
    min_frequency: int = Field(5, ge=1)
    max_reject_fraction: float = Field(0.05, ge=0, le=1)
    max_abs_numeric: float = Field(1e100, gt=0, description="numeric features beyond ±this (or infinite) are quarantined")
    numeric_bins: int = Field(16, ge=0, description="bins per numeric feature (piecewise-linear embeddings); 0: none")
    numeric_bin_edges: Literal["tree", "quantile"] = Field(
        "tree", description="tree: the splits of a small tree per numeric fitted on the train labels; quantile: train quantiles"
    )
    teacher: bool = Field(
        True, description="write out-of-fold tree-teacher probabilities into the train split (``TrainConfig.distill``)"
    )
    earliest_timestamp: float | None = Field(
        946_684_800.0, description="timestamps (Unix seconds) before this are quarantined (default 2000-01-01); null: no check"
    )
    future_horizon_days: float | None = Field(
        1.0, ge=0, description="timestamps (Unix seconds) later than now + this many days are quarantined; null: no check"
    )


class LogSchema(_Strict):
    """A dataset's schema: where each role lives among its columns."""

    name: str
    source: Source = Source()
    timestamp: str | None = None
    ids: Ids = Ids()
    features: list[Feature]
    tiers: Tiers
    scenario: Scenario
    tasks: list[Task]
    split: Split = Split()
    preprocess: Preprocess = Preprocess()

    @model_validator(mode="after")
    def _check(self) -> LogSchema:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: duplicate task names in {names}")
        for t in self.tasks:
            if t.after is not None and t.after not in names:
                raise ValueError(f"task {t.name!r}: after={t.after!r} is not a task")
            unknown = set(t.tiers or []) - set(self.tiers.names)
            if unknown:
                raise ValueError(f"task {t.name!r}: unknown tiers {sorted(unknown)}")
        cols = [f.column for f in self.features]
        if len(set(cols)) != len(cols):
            raise ValueError("features: a column is listed twice")
        label_cols = {t.column for t in self.tasks if t.column}
        leaked = label_cols & set(cols)
        if leaked:
            raise ValueError(f"features: label columns {sorted(leaked)} cannot also be features")
        if self.split.by is None:
            self.split.by = "time" if self.timestamp is not None else "hash"
        if self.split.by == "time" and self.timestamp is None:
            raise ValueError("split.by=time needs a timestamp column (or use split.by=hash)")
        if self.source.format == "csv" and not self.source.csv.header and not self.source.csv.column_names:
            raise ValueError("source.csv: header is false, so column_names must be given")
        return self

    @property
    def model_features(self) -> list[Feature]:
        """Every feature the models see: the declared ones plus, unless the schema says otherwise, the
        tier and scenario source columns, so a baseline sees what TAMOR routes by (a fair comparison)."""
        declared = {f.column for f in self.features}
        implied = []
        if self.tiers.feature and self.tiers.column not in declared:
            kind = "categorical" if self.tiers.values is not None else "numeric"
            implied.append(Feature(column=self.tiers.column, side="user", type=kind, log1p=kind == "numeric"))
        if self.scenario.feature and self.scenario.column not in declared:
            implied.append(Feature(column=self.scenario.column, side="item", type="categorical"))
        return [*self.features, *implied]

    @property
    def present_tasks(self) -> list[Task]:
        return [t for t in self.tasks if t.column is not None]

    def raw_columns(self) -> list[str]:
        """Every raw column the pipeline reads."""
        cols = [self.timestamp, self.ids.user, self.ids.item, self.tiers.column, self.scenario.column]
        cols += [f.column for f in self.features] + [t.column for t in self.tasks]
        return list(dict.fromkeys(c for c in cols if c is not None))


def load_schema(path_or_name: str | Path) -> LogSchema:
    """Load a schema from a YAML path, or by name from the shipped ``platform/schemas/``."""
    path = Path(path_or_name)
    if not path.exists():
        shipped = SCHEMA_DIR / f"{path_or_name}.yaml"
        if not shipped.exists():
            available = sorted(p.stem for p in SCHEMA_DIR.glob("*.yaml"))
            raise SchemaError(f"no schema file {path} and no shipped schema of that name ({available})")
        path = shipped
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SchemaError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise SchemaError(f"{path}: a schema is a YAML mapping, got {type(raw).__name__}")
    try:
        return LogSchema.model_validate(raw)
    except ValidationError as e:
        lines = [f"  {'.'.join(map(str, err['loc'])) or '<root>'}: {err['msg']}" for err in e.errors()]
        raise SchemaError(f"{path}: invalid schema\n" + "\n".join(lines)) from None
