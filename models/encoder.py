"""The one feature encoder: raw values → model input columns, the same function offline and online.

Fitted once by ``tamor preprocess`` (vocabularies and numeric statistics from train rows, tier
thresholds and scenario ids from the schema) and saved as one artifact, ``encoder.json``, in the data
directory. Preprocessing applies it inside Ray Data; serving applies it to request context and to
cold-start rows; every checkpoint and registry version carries a copy, so a served model is refused
when its encoder differs from the feature store's (:attr:`Encoder.fingerprint`).

It is Ray-free: pandas, NumPy and PyArrow's string kernels only. Raw values of any kind (str, int, float,
bool, bytes, None, NaN) first become canonical text (:func:`canonical_text`), so 94, 94.0, "94" and " 94 " are
one category whether they came from a CSV, a Parquet column of floats or a JSON request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from tamor.models.feature_spec import SIDES, CategoricalField, FeatureSpec, NumericField, Side, TaskSpec

ENCODER_FILE = "encoder.json"
FORMAT = "tamor-encoder/1"
MISSING = "<missing>"  # the token a missing categorical value counts as (an id if frequent in train)
OOV = 0  # the id of every value outside a vocabulary
_WHITESPACE = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())  # what str.strip() removes (none above U+3000)


def canonical_text(value: Any, strip: bool = True) -> str | None:
    """One raw value as text, or None when missing: integral floats lose their ``.0``, bytes are
    decoded, surrounding whitespace is stripped and empty text is missing."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    elif isinstance(value, (bool, np.bool_)):
        value = str(bool(value))
    elif isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return None
        value = str(int(value)) if float(value).is_integer() else str(value)
    elif isinstance(value, (int, np.integer)):
        value = str(int(value))
    else:
        value = str(value)
    if strip:
        value = value.strip()
    return value or None


def as_text(values: pd.Series | Sequence[Any], strip: bool = True) -> pd.Series:
    """:func:`canonical_text` over a column: ``[N] -> [N]`` object Series of str or None.

    Vectorised by dtype (floats, integers, booleans, plain text) with the same result as calling
    :func:`canonical_text` on every value (tested); anything else maps each distinct value once."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        return pd.Series(_float_text(series.to_numpy(dtype=np.float64)), index=series.index, dtype=object)
    if isinstance(dtype, np.dtype) and dtype.kind in "iub":
        x = series.to_numpy()
        text = np.where(x, "True", "False").astype(object) if dtype.kind == "b" else _arrow_text(x)
        return pd.Series(text, index=series.index, dtype=object)
    strings = _as_arrow_strings(series)
    if strings is not None:  # Arrow's kernels: one pass in C, not a Python call per value
        if strip:
            strings = pc.utf8_trim(strings, characters=_WHITESPACE)
        strings = pc.if_else(pc.equal(strings, ""), pa.scalar(None, pa.string()), strings)
        return pd.Series(strings.to_numpy(zero_copy_only=False), index=series.index, dtype=object)
    objects = series.astype(object)
    codes, uniques = pd.factorize(objects, use_na_sentinel=True)
    mapped = np.array([canonical_text(v, strip) for v in uniques] + [None], dtype=object)
    return pd.Series(mapped[codes], index=series.index, dtype=object)  # code -1 (missing) takes the last entry: None


def _arrow_text(x: np.ndarray) -> np.ndarray:
    """``[N]`` numbers → ``[N]`` object array of Arrow's text for them (an integer's is Python's ``str``)."""
    return pc.cast(pa.array(x), pa.string()).to_numpy(zero_copy_only=False)


def _float_text(x: np.ndarray) -> np.ndarray:
    """``[N]`` float64 → ``[N]`` object array of :func:`canonical_text`'s text: integral values as integers, the rest as
    Python's shortest ``repr``, NaN as None. Arrow writes the same shortest digits several times faster than NumPy, but
    in other notation below 1e-4 and for some long values (an exponent where Python writes the digits out): those
    values, and integers beyond int64, are written as Python writes them."""
    integral = np.isfinite(x) & (x == np.trunc(x))
    small = integral & (np.abs(x) < 2.0**63)
    floats = pc.cast(pa.array(x), pa.string())
    text = np.where(small, _arrow_text(np.where(small, x, 0.0).astype(np.int64)), floats.to_numpy(zero_copy_only=False))
    exponent = pc.match_substring(floats, "e").to_numpy(zero_copy_only=False)
    python = ~integral & np.isfinite(x) & ((np.abs(x) < 1e-4) | exponent)
    text[python] = x[python].astype(str)  # NumPy's float64 → str is Python's repr
    text[integral & ~small] = [str(int(v)) for v in x[integral & ~small]]
    text[np.isnan(x)] = None
    return text


def _as_arrow_strings(series: pd.Series) -> pa.Array | pa.ChunkedArray | None:
    """A column of text (and missing values) as Arrow strings; None when it holds anything else, or text that is
    not valid UTF-8 (a lone surrogate), which :func:`canonical_text` then takes value by value."""
    text_dtype = isinstance(series.dtype, pd.StringDtype)
    if not text_dtype and (series.dtype != object or pd.api.types.infer_dtype(series, skipna=True) not in ("string", "empty")):
        return None
    try:
        return pa.array(series.array if text_dtype else series.to_numpy(), type=pa.string(), from_pandas=True)
    except (pa.ArrowException, UnicodeEncodeError):
        return None


def parse_number(text: pd.Series) -> pd.Series:
    """Text → float64, NaN where missing or unparsable: ``[N] -> [N]``, as ``pd.to_numeric(errors="coerce")`` reads it.

    Arrow's parser first: one pass in C, where pandas' costs a Python-level step per value. It refuses a whole
    column for any one text it does not read (a space, a word, a comma); pandas then reads that column, the
    unreadable values as NaN.

    >>> parse_number(pd.Series(["1.5", None, "1e3"])).tolist(), parse_number(pd.Series(["7", "n/a"])).tolist()
    ([1.5, nan, 1000.0], [7.0, nan])
    """
    strings = _as_arrow_strings(text)
    if strings is not None:
        try:
            return pd.Series(pc.cast(strings, pa.float64()).to_numpy(zero_copy_only=False), index=text.index, dtype="float64")
        except pa.ArrowInvalid:
            pass
    return pd.to_numeric(text, errors="coerce").astype("float64")


def tier_index(amount: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """A tier per amount: the number of thresholds at or below it, ``[N] -> [N]`` int64."""
    return np.searchsorted(np.asarray(thresholds, dtype=float), np.asarray(amount, dtype=float), side="right").astype(np.int64)


class CategoricalEncoding(BaseModel):
    """A categorical column: canonical text → id (``OOV`` = 0 for anything outside the vocabulary)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    side: Side
    vocabulary: dict[str, int]


class Encoder(BaseModel):
    """Everything that turns raw values into the model's input columns (see :class:`FeatureSpec`)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["tamor-encoder/1"] = FORMAT
    dataset: str
    strip: bool = True
    categorical: list[CategoricalEncoding]
    numeric: list[NumericField]  # (f(x) - mean) / std; missing, unparsable or non-finite values are the mean
    tiers: list[str]
    tier_thresholds: list[float]
    tier_values: dict[str, int] | None = None  # a tier from a flag or category: canonical raw value → tier id
    scenarios: list[str]
    max_abs_numeric: float = 1e100  # numerics beyond ±this were quarantined in training; online they count as missing

    # ------------------------------------------------------------------ encoding

    def tier_of(self, amount: np.ndarray) -> np.ndarray:
        """Holdings ``[N]`` → tier ids ``[N]`` (by the thresholds)."""
        return tier_index(amount, self.tier_thresholds)

    def tier_ids(self, values: pd.Series | Sequence[Any]) -> np.ndarray:
        """Raw tier-column values ``[N]`` → tier ids ``[N]``: by the value map, else by the thresholds.
        Missing or unknown values are the lowest tier (what a cold-start user is)."""
        if self.tier_values is not None:
            return as_text(values, self.strip).map(self.tier_values).fillna(0).to_numpy(np.int64)
        amount = parse_number(as_text(values, self.strip)).fillna(0.0).to_numpy()
        return self.tier_of(amount)

    def scenario_ids(self, values: pd.Series | Sequence[Any]) -> np.ndarray:
        """Raw scenario values ``[N]`` → scenario ids ``[N]`` (0 for an unknown or missing one)."""
        index = {s: i for i, s in enumerate(self.scenarios)}
        return as_text(values, self.strip).map(index).fillna(0).to_numpy(np.int64)

    def encode(self, rows: pd.DataFrame | Mapping[str, Any], sides: Sequence[Side] = SIDES, n: int | None = None) -> dict[str, np.ndarray]:
        """Raw feature values → ``{"f_<name>": [N]}`` (int64 ids, float32 standardised numerics).

        ``rows`` is a DataFrame of raw columns, or a mapping of column → list of values, or of
        column → one scalar (a request's context) broadcast to ``n`` rows. A feature whose column is
        absent counts as missing in every row (that is a cold-start row).
        """
        frame = rows if isinstance(rows, pd.DataFrame) else None
        length = len(frame) if frame is not None else (n if n is not None else _length(rows))

        def column(name: str) -> pd.Series:
            value = rows.get(name) if frame is None else (frame[name] if name in frame.columns else None)
            if isinstance(value, pd.Series):
                return value.reset_index(drop=True)
            if value is None or np.isscalar(value) or isinstance(value, (str, bytes)):
                return pd.Series([value] * length, dtype=object)
            return pd.Series(list(value), dtype=object)

        out: dict[str, np.ndarray] = {}
        for f in self.categorical:
            if f.side in sides:
                text = as_text(column(f.name), self.strip).fillna(MISSING)
                out[f"f_{f.name}"] = text.map(f.vocabulary).fillna(OOV).to_numpy(np.int64)
        for f in self.numeric:
            if f.side in sides:
                x = parse_number(as_text(column(f.name), self.strip)).to_numpy()
                x = np.where(np.isfinite(x) & (np.abs(x) <= self.max_abs_numeric), x, np.nan)
                if f.log1p:
                    x = np.log1p(np.clip(x, 0, None))
                z = np.clip((x - f.mean) / f.std, -1e30, 1e30)  # stays finite in float32
                out[f"f_{f.name}"] = np.nan_to_num(z, nan=0.0).astype(np.float32)
        return out

    # ------------------------------------------------------------------ the model's view

    def feature_spec(self, tasks: list[TaskSpec], timestamp: str | None = "ts") -> FeatureSpec:
        """The shapes and names a model is built from (vocabulary sizes, not vocabularies)."""
        return FeatureSpec(
            dataset=self.dataset,
            timestamp=timestamp,
            categorical=[CategoricalField(name=f.name, side=f.side, vocab_size=len(f.vocabulary) + 1) for f in self.categorical],
            numeric=list(self.numeric),
            tiers=self.tiers,
            tier_thresholds=self.tier_thresholds,
            holdings="holdings",
            scenarios=self.scenarios,
            tasks=tasks,
        )

    # ------------------------------------------------------------------ identity and files

    @property
    def fingerprint(self) -> str:
        """A short hash of the whole encoding: equal fingerprints encode every raw value alike."""
        # defaults left out: a field added to the format later does not change existing fingerprints
        canonical = json.dumps(self.model_dump(exclude_defaults=True), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json())

    @classmethod
    def load(cls, path: str | Path) -> Encoder:
        """From ``encoder.json`` or a directory holding one."""
        path = Path(path)
        if path.is_dir():
            path = path / ENCODER_FILE
        return cls.model_validate_json(path.read_text())


def _length(rows: Mapping[str, Any]) -> int:
    for value in rows.values():
        if value is not None and not np.isscalar(value) and not isinstance(value, (str, bytes)):
            return len(value)
    return 1
