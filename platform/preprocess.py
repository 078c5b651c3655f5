"""`tamor preprocess`: raw tiered logs → train / valid / test Parquet shards, a feature spec, online
snapshots and a quarantine, as a streaming Ray Data pipeline.

Passes over the data (only vocabularies, counts and a sample of at most 500,000 train rows, for the
numerics' tree bin edges and the tree teacher, come to the driver):

1. read (CSV / Parquet / JSON, any pyarrow/fsspec path) → :func:`check_batch` → ``_staging/``
2. rejected rows → ``quarantine/`` with their reason; reject fraction checked
3. time range of the good rows → split cut points
4. train rows → vocabulary counts and numeric sums in one pass (fitted on train only)
5. every good row → encoded → ``train/ valid/ test/``; bin edges of the numerics from (a sample of) ``train/``;
   an out-of-fold tree teacher's probabilities added to ``train/`` (``platform/teacher.py``)
6. latest row per user and per item → ``online/users``, ``online/items``

Rows in = rows out + rows quarantined, checked at the end.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import ray
from ray.data.expressions import col

from tamor.models.encoder import MISSING, CategoricalEncoding, Encoder, parse_number
from tamor.models.errors import TamorError
from tamor.models.feature_spec import FeatureSpec, NumericField, TaskSpec
from tamor.platform.data_dir import ONLINE_KINDS, SPLITS, DataDir
from tamor.platform.schema import LogSchema
from tamor.platform.sources import check_columns, read_failure, source_files, unzip
from tamor.platform.teacher import add_teacher, fit_teachers
from tamor.platform.tree_bins import fit_tree_bins
from tamor.platform.validate import FILE, KEY, REASON, check_batch, parse_label

OTHER_SCENARIO = "<other>"
_HASH_BUCKETS = 1_000_000
# Rows per call of every pass over the rows (checks, statistics, encoding, the teacher's predictions): each call has a
# fixed cost of many pandas operations, and a call's memory grows with its rows (map_in_slices).
BATCH_ROWS = 65_536
# Log rows per hash partition where per-block partial results (counts per value, latest rows per key) are combined by
# key; a smaller log gathers them into one block: a shuffle costs it more than the work.
GATHER_ROWS = 2_000_000


class PreprocessError(TamorError, RuntimeError):
    """The data cannot be preprocessed as asked (the quarantine written so far is kept)."""


@dataclass
class PreprocessReport:
    rows_in: int
    rows_out: dict[str, int]
    rows_quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def conserved(self) -> bool:
        return self.rows_in == sum(self.rows_out.values()) + self.rows_quarantined


# ---------------------------------------------------------------- reading


def whole_files(files: int) -> bool:
    """Whether a read of ``files`` files takes one block per file: where they are at least as many as the cluster's
    CPUs, so each task reads and works whole files (:func:`map_in_slices`). Ray's default splits files into blocks of a
    few thousand rows; with fewer files than CPUs that split is what spreads them."""
    return files >= ray.cluster_resources().get("CPU", 1)


def read_blocks(files: int) -> dict[str, int]:
    """Ray Data's read option for ``files`` files (:func:`whole_files`)."""
    return {"override_num_blocks": files} if whole_files(files) else {}


def map_in_slices(ds: ray.data.Dataset, fn: Callable[..., Any], fn_kwargs: dict[str, Any], batch_format: str = "pandas",
                  rows: int = BATCH_ROWS) -> ray.data.Dataset:
    """``fn(batch, **fn_kwargs)`` over ``ds`` in batches of at most ``rows`` rows, run in the tasks that read the blocks
    where they are whole files (:func:`whole_files`).

    Ray Data does not fuse a ``map_batches`` that asks for a batch size into the read (or filter) before it, since
    that may change the row count: the map then runs as a second operator, and each read task waiting for it holds a
    CPU (on 2 CPUs the row checks ran on one). A map without a batch size is fused, and slices each block here.
    ``fn``'s name stays the operator's name in Ray Data's logs and stats. A read Ray splits is never fused: there Ray
    gathers its small blocks into batches of ``rows``."""
    if not whole_files(len(ds.input_files())):
        return ds.map_batches(fn, fn_kwargs=fn_kwargs, batch_format=batch_format, batch_size=rows)

    def in_slices(block: pd.DataFrame | pa.Table) -> Iterator[Any]:
        for start in range(0, len(block), rows):
            yield fn(block.iloc[start : start + rows] if isinstance(block, pd.DataFrame) else block.slice(start, rows), **fn_kwargs)

    in_slices.__name__ = in_slices.__qualname__ = fn.__name__
    return ds.map_batches(in_slices, batch_format=batch_format, batch_size=None)


def read_written(*paths: Path) -> ray.data.Dataset:
    """The Parquet files preprocessing wrote under ``paths`` (directories), read in :func:`read_blocks`."""
    files = sum(len(pads.dataset(str(p), format="parquet").files) for p in paths)
    return ray.data.read_parquet([str(p) for p in paths], **read_blocks(files))


def read_source(files: list[str], schema: LogSchema, columns: list[str]) -> ray.data.Dataset:
    """Read every one of ``files`` (:func:`~tamor.platform.sources.source_files`) as declared by ``schema.source``,
    each row with its file's path in ``path``; CSV columns are read as text (parsing is ours)."""
    fmt = schema.source.format
    every = {"file_extensions": None, "include_paths": True, **read_blocks(len(files))}  # listed and checked on the driver
    if fmt == "parquet":
        return ray.data.read_parquet(files, **every)
    if fmt == "json":
        return ray.data.read_json(files, **every)
    opts = schema.source.csv
    names = opts.column_names
    read_options = pacsv.ReadOptions(column_names=names) if names else pacsv.ReadOptions()
    # Every column is read as text (parsing is ours; the row hash that ids rows covers all of them).
    return ray.data.read_csv(
        files,
        **every,
        read_options=read_options,
        parse_options=pacsv.ParseOptions(delimiter=opts.delimiter),
        convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in columns}, strings_can_be_null=True),
    )


# ---------------------------------------------------------------- fitting (train only)


def split_of(df: pd.DataFrame, schema: LogSchema, cuts: tuple[float, float]) -> np.ndarray:
    """``train`` / ``valid`` / ``test`` per row: by timestamp against ``cuts``, or by row hash."""
    if schema.split.by == "time":
        position = parse_number(df[schema.timestamp]).to_numpy()
    else:
        position = (df[KEY].to_numpy(dtype=np.uint64) % _HASH_BUCKETS) / _HASH_BUCKETS
    return np.select([position < cuts[0], position < cuts[1]], ["train", "valid"], "test")


def _rows_of(batch: pd.DataFrame, split: str, schema: LogSchema, cuts: tuple[float, float]) -> pd.DataFrame:
    return batch[split_of(batch, schema, cuts) == split]


def _numeric_values(df: pd.DataFrame, schema: LogSchema) -> dict[str, np.ndarray]:
    out = {}
    for f in schema.model_features:
        if f.type == "numeric":
            x = parse_number(df[f.column]).to_numpy()
            x = np.where(np.isfinite(x), x, np.nan)  # as the encoder reads them: non-finite is missing
            out[f.column] = np.log1p(np.clip(x, 0, None)) if f.log1p else x
    return out


def _fit_partials(batch: pd.DataFrame, schema: LogSchema, cuts: tuple[float, float]) -> pd.DataFrame:
    """Per-batch value counts of categoricals and sums of numerics, train rows only: rows (column, value, n)."""
    train = _rows_of(batch, "train", schema, cuts)

    def counts(name: str, values: pd.Series) -> pd.DataFrame:
        vc = values.value_counts()
        return pd.DataFrame({"column": name, "value": vc.index.astype(str), "n": vc.to_numpy(float)})

    frames = [counts(f.column, train[f.column].fillna(MISSING)) for f in schema.model_features if f.type == "categorical"]
    frames.append(counts("__scenario__", train[schema.scenario.column].astype(str)))
    for column, x in _numeric_values(train, schema).items():
        x = x[~np.isnan(x)]
        frames.append(
            pd.DataFrame({"column": column, "value": ["__count__", "__sum__", "__sumsq__"], "n": [len(x), x.sum(), (x**2).sum()]})
        )
    return pd.concat(frames, ignore_index=True)


def combine_by_key(partials: ray.data.Dataset, keys: list[str], rows: int, fn: Callable[..., pd.DataFrame],
                   fn_kwargs: dict[str, Any]) -> ray.data.Dataset:
    """Per-block partial results combined per ``keys`` by ``fn`` (a pandas batch → frame), which sees every partial
    of a key in one batch: gathered into one block for a log of up to :data:`GATHER_ROWS` rows, hash-partitioned
    by key (one partition per ``GATHER_ROWS`` rows) beyond."""
    partitions = -(-rows // GATHER_ROWS)
    grouped = partials.repartition(partitions, keys=keys) if partitions > 1 else partials.repartition(1)
    return grouped.map_batches(fn, fn_kwargs=fn_kwargs, batch_format="pandas", batch_size=None)


def _sum_by(batch: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    return batch.groupby(keys, as_index=False, sort=False)[value].sum()


def fit(good: ray.data.Dataset, schema: LogSchema, cuts: tuple[float, float], rows: int) -> Encoder:
    """The encoder, fitted on the train rows of ``good`` (a log of ``rows`` rows): vocabularies (min frequency),
    numeric statistics, scenarios."""
    partials = map_in_slices(good, _fit_partials, {"schema": schema, "cuts": cuts})
    keys = ["column", "value"]  # one row per distinct value reaches the driver: the size of the vocabularies, not of the data
    totals = combine_by_key(partials, keys, rows, _sum_by, {"keys": keys, "value": "n"}).to_pandas()
    min_freq = schema.preprocess.min_frequency
    categorical, numeric = [], []
    for f in schema.model_features:
        rows = totals[totals["column"] == f.column]
        if f.type == "categorical":
            kept = rows[rows["n"] >= min_freq].sort_values(["n", "value"], ascending=[False, True])
            vocabulary = {v: i + 1 for i, v in enumerate(kept["value"])}  # 0 is out-of-vocabulary
            categorical.append(CategoricalEncoding(name=f.column, side=f.side, vocabulary=vocabulary))
        else:
            s = dict(zip(rows["value"], rows["n"]))
            count = s.get("__count__", 0.0)
            if count == 0:
                raise PreprocessError(f"numeric feature {f.column!r} has no parsable value in train")
            mean = s["__sum__"] / count
            std = float(np.sqrt(max(s["__sumsq__"] / count - mean**2, 0.0)))
            numeric.append(NumericField(name=f.column, side=f.side, mean=float(mean), std=std if std > 1e-12 else 1.0, log1p=f.log1p))
    numeric = _numeric_bins(good, schema, cuts, numeric)
    if schema.scenario.values is not None:
        scenarios = list(schema.scenario.values)
    else:
        seen = totals[(totals["column"] == "__scenario__") & (totals["n"] >= min_freq)]
        scenarios = [OTHER_SCENARIO] + sorted(seen["value"])
    if not categorical and not numeric:
        raise PreprocessError("no features declared")
    tier_values = None
    if schema.tiers.values is not None:
        tier_values = {v: schema.tiers.names.index(name) for v, name in schema.tiers.values.items()}
    return Encoder(dataset=schema.name, strip=schema.source.csv.strip, categorical=categorical, numeric=numeric,
                   tiers=schema.tiers.names, tier_thresholds=schema.tiers.thresholds, tier_values=tier_values, scenarios=scenarios,
                   max_abs_numeric=schema.preprocess.max_abs_numeric)


# ---------------------------------------------------------------- encoding


def encode_batch(batch: pd.DataFrame, schema: LogSchema, encoder: Encoder, cuts: tuple[float, float]) -> pd.DataFrame:
    """Checked raw rows → model-ready columns (see :class:`FeatureSpec` for the naming), by the encoder."""
    out: dict[str, object] = {"split": split_of(batch, schema, cuts)}
    if schema.ids.user is not None:
        out["user_id"] = batch[schema.ids.user].astype(str).to_numpy()
    else:  # each row its own user: a hash of the whole raw row, so distinct rows never merge
        out["user_id"] = np.char.add("r", batch[KEY].to_numpy(dtype=np.uint64).astype(str))
    item_col = schema.ids.item or schema.scenario.column
    out["item_id"] = batch[item_col].astype(str).to_numpy()
    if schema.timestamp is not None:
        out["ts"] = parse_number(batch[schema.timestamp]).to_numpy().astype(np.int64)
    out["holdings"] = parse_number(batch[schema.tiers.column]).fillna(0.0).to_numpy()  # 0 for a categorical tier
    out["tier"] = encoder.tier_ids(batch[schema.tiers.column])
    out["scenario"] = encoder.scenario_ids(batch[schema.scenario.column])
    out.update(encoder.encode(batch.reset_index(drop=True)))
    for t in schema.tasks:
        lab = parse_label(batch[t.column], t).to_numpy() if t.column else np.full(len(batch), np.nan)
        out[f"mask_{t.name}"] = (~np.isnan(lab)).astype(np.float32)
        out[f"label_{t.name}"] = np.nan_to_num(lab, nan=0.0).astype(np.float32)
    return pd.DataFrame(out)


def task_specs(schema: LogSchema) -> list[TaskSpec]:
    return [
        TaskSpec(name=t.name, level=t.level, tiers=t.tiers or schema.tiers.names, present=t.column is not None)
        for t in schema.tasks
    ]


# ---------------------------------------------------------------- online snapshots


def _latest(batch: pd.DataFrame, key: str, order: str) -> pd.DataFrame:
    """The last row per ``key`` by ``order``: applied per block, then per group."""
    return batch.sort_values(order, kind="stable").drop_duplicates(key, keep="last")


def write_online(encoded: ray.data.Dataset, spec: FeatureSpec, data: DataDir, rows: int) -> dict[str, int]:
    """Latest feature row per user and per item (the serving feature store's snapshot) of a log of ``rows`` rows: each
    block keeps its latest row per key, then :func:`combine_by_key` the latest of those."""
    order = "ts" if spec.timestamp else "holdings"
    counts = {}
    for kind in ONLINE_KINDS:
        key, cols = spec.online_columns(kind)
        keep = list(dict.fromkeys([key, order, *cols]))
        per_block = map_in_slices(encoded.select_columns(keep), _latest, {"key": key, "order": order})
        combine_by_key(per_block, [key], rows, _latest, {"key": key, "order": order}).write_parquet(str(data.online(kind)))
        counts[kind] = parquet_rows(data.online(kind))
    return counts


def write_teacher(data: DataDir, spec: FeatureSpec, rows: int) -> None:
    """Rewrite the train split with the out-of-fold teacher's ``teacher_<task>`` columns (beside it, then swapped in)."""
    train = read_written(data.split("train"))
    teachers = fit_teachers(train, rows, spec)
    map_in_slices(train, add_teacher, {"spec": spec, "teachers": teachers}, "pyarrow").write_parquet(str(data.train_staging))
    old = data.staging / "train_without_teacher"  # in the staging area: a failed run's cleanup removes it
    old.parent.mkdir(parents=True, exist_ok=True)
    data.split("train").rename(old)  # two renames: the written split is never removed before its replacement is whole
    data.train_staging.rename(data.split("train"))
    shutil.rmtree(old)


# ---------------------------------------------------------------- the pipeline


def preprocess(source: str | list[str], schema: LogSchema, out: str | Path) -> PreprocessReport:
    """Run the whole pipeline; return the row counts. Raises :class:`PreprocessError` on too many rejects.

    ``out`` must be new, empty, or what a failed run left (which is cleared). A failed run removes
    everything it wrote except ``quarantine/``, so the reasons stay readable and a rerun is accepted.
    """
    data = DataDir(out)
    if data.stats_file.exists():
        raise PreprocessError(f"{data.root} already holds a preprocessed dataset: choose a new output directory")
    ours = set(data.written())
    foreign = [p.name for p in data.root.iterdir() if p not in ours] if data.root.exists() else []
    if foreign:
        raise PreprocessError(f"{data.root} holds files preprocessing did not write ({sorted(foreign)[:5]}): choose a new output directory")
    _remove(data.written())  # a failed run's leftovers
    try:
        return _preprocess(source, schema, data)
    except BaseException:
        _remove([p for p in data.written() if p != data.quarantine])
        raise


def check_every_file_read(data: DataDir, files: list[str]) -> None:
    """Each listed file gave rows (the conservation check counts the rows that were read; this, the files)."""
    per_block = read_written(data.staging).select_columns([FILE]).map_batches(_counts, fn_kwargs={"column": FILE},
                                                                                            batch_format="pandas", batch_size=None)
    read = {str(p).split("://", 1)[-1] for p in per_block.to_pandas()[FILE]}  # files × blocks rows
    unread = [f for f in files if f.split("://", 1)[-1] not in read]
    if unread:
        raise PreprocessError(f"no rows read from {len(unread)} of the source's {len(files)} files: {', '.join(unread[:5])} "
                              "(empty, or skipped by the reader); remove them from the source or fix them")


def _counts(batch: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rows per value of ``column`` in one block (``batch_size=None``, so the read's tasks count: :func:`map_in_slices`):
    a few rows, summed on the driver (no shuffle)."""
    return batch[column].value_counts().rename_axis(column).reset_index(name="n")


def parquet_rows(path: Path) -> int:
    """Rows of the Parquet files written under ``path`` (0 where there are none: Ray Data writes no file for no rows),
    from their footers: a Ray Data count of a written split costs a job's start-up (tenths of a second, seconds on a
    busy machine) and reads the same footers."""
    if not path.exists() or not any(path.iterdir()):
        return 0
    return pads.dataset(str(path), format="parquet").count_rows()


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _preprocess(source: str | list[str], schema: LogSchema, data: DataDir) -> PreprocessReport:
    """Read and check every row, quarantine the bad ones, then fit on train and write the splits and snapshots."""
    rows_in = _read_and_check(source, schema, data)
    rows_quarantined, reasons = _quarantine(schema, data, rows_in)
    rows_out, online, cuts, encoder = _encode_and_write(schema, data, rows_in)
    report = PreprocessReport(rows_in, rows_out, rows_quarantined, reasons)
    if not report.conserved:  # pragma: no cover - a bug, never bad data
        raise PreprocessError(f"row conservation broken: {report}")
    data.stats_file.write_text(
        json.dumps({**report.__dict__, "online": online, "cuts": list(cuts), "encoder": encoder.fingerprint}, indent=2, default=str)
    )
    return report


def _read_and_check(source: str | list[str], schema: LogSchema, data: DataDir) -> int:
    """Every source file read and each row checked into ``staging`` (a reason column, empty for good rows); rows read."""
    sources = [unzip(s, data.source_copy) for s in ([source] if isinstance(source, str) else source)]
    columns = check_columns(sources, schema)  # on the driver: a missing column is one line naming the file
    files = source_files(sources, schema.source.format)
    checks = {"schema": schema, "now": time.time()}  # one clock for every block's future-timestamp check
    try:
        checked = map_in_slices(read_source(files, schema, columns), check_batch, checks)
        checked.write_parquet(str(data.staging))
    except Exception as e:  # a file that does not parse: one line naming it, not Ray's traceback
        if isinstance(e, TamorError):
            raise
        raise read_failure(e, sources, schema.source.format) from e
    rows_in = parquet_rows(data.staging)
    if rows_in == 0:
        raise PreprocessError(f"no rows read from {source}")
    check_every_file_read(data, files)
    return rows_in


def _quarantine(schema: LogSchema, data: DataDir, rows_in: int) -> tuple[int, dict[str, int]]:
    """The rejected rows to ``quarantine/``, counted by reason; refuse a run that rejects too many."""
    read_written(data.staging).filter(expr=col(REASON) != "").write_parquet(str(data.quarantine))
    rows_quarantined = parquet_rows(data.quarantine)
    if not rows_quarantined:
        shutil.rmtree(data.quarantine, ignore_errors=True)  # no rejected rows: no quarantine
    reasons: dict[str, int] = {}
    if rows_quarantined:
        per_block = read_written(data.quarantine).select_columns([REASON]).map_batches(
            _counts, fn_kwargs={"column": REASON}, batch_format="pandas", batch_size=None).to_pandas()
        reasons = {str(k): int(n) for k, n in per_block.groupby(REASON)["n"].sum().items()}
    for t in schema.present_tasks:  # a label column that is really an amount: say so, never 0 positives in silence
        n = reasons.get(f"label_not_binary:{t.name}", 0)
        if n > max(10, 0.001 * rows_in):
            raise PreprocessError(
                f"task {t.name!r}: {n} rows of column {t.column!r} hold a label other than 0/1; if it is an amount, declare "
                f"positive: '> 100' (a comparison), or list the values meaning 1 (see {data.quarantine})"
            )
    fraction = rows_quarantined / rows_in
    if fraction > schema.preprocess.max_reject_fraction:
        raise PreprocessError(
            f"{rows_quarantined} of {rows_in} rows ({fraction:.1%}) were rejected, over the allowed "
            f"{schema.preprocess.max_reject_fraction:.1%}; see {data.quarantine} (reasons: {reasons})"
            + (" — timestamps must be Unix seconds (preprocess.future_horizon_days: null turns the check off)"
               if reasons.get("future_timestamp", 0) > rows_quarantined / 2 else "")
        )
    return rows_quarantined, reasons


def _encode_and_write(schema: LogSchema, data: DataDir, rows_in: int) -> tuple[dict[str, int], dict, tuple, Encoder]:
    """Fit the encoder on train, write the encoded splits, the raw test rows, the online snapshots and the teacher."""
    good = read_written(data.staging).filter(expr=col(REASON) == "")
    cuts = _cut_points(good, schema)
    encoder = fit(good, schema, cuts, rows_in)
    spec = encoder.feature_spec(task_specs(schema), timestamp="ts" if schema.timestamp else None)
    map_in_slices(good, encode_batch, {"schema": schema, "encoder": encoder, "cuts": cuts}).write_parquet(
        str(data.encoded_staging), partition_cols=["split"]
    )
    map_in_slices(good, _rows_of, {"split": "test", "schema": schema, "cuts": cuts}).drop_columns([REASON]).write_parquet(str(data.raw_test))
    rows_out = _move_splits(data)
    if schema.preprocess.numeric_bin_edges == "tree":  # edges shape the model's input layer, not the encoded columns
        numeric = fit_tree_bins(read_written(data.split("train")), rows_out["train"], spec, schema.preprocess.numeric_bins)
        encoder = encoder.model_copy(update={"numeric": numeric})
        spec = spec.model_copy(update={"numeric": numeric})
    spec.save(data.spec_file)
    encoder.save(data.encoder_file)
    encoded = read_written(*[data.split(s) for s in SPLITS if rows_out[s]])
    online = write_online(encoded, spec, data, rows_in)
    if schema.preprocess.teacher:  # after the online snapshots, which read every split with one schema
        write_teacher(data, spec, rows_out["train"])
    shutil.rmtree(data.staging)
    shutil.rmtree(data.source_copy, ignore_errors=True)
    return rows_out, online, cuts, encoder


def _move_splits(data: DataDir) -> dict[str, int]:
    """The encoded staging's ``split=`` partitions become the split directories; rows per split."""
    rows_out = {}
    for split in SPLITS:
        part = data.encoded_staging / f"split={split}"
        if part.exists():
            part.rename(data.split(split))
        else:
            data.split(split).mkdir()
        rows_out[split] = parquet_rows(data.split(split))
    shutil.rmtree(data.encoded_staging)
    if rows_out["train"] == 0:
        raise PreprocessError("the train split is empty: check the split fractions and the timestamps")
    return rows_out


def _block_quantiles(values: dict[str, np.ndarray], points: int) -> pd.DataFrame:
    """A block's sketch: ``points`` quantiles per column, each weighted by the block's rows / points."""
    frames = []
    for column, x in values.items():
        x = x[~np.isnan(x)]
        if len(x):
            frames.append(pd.DataFrame({"column": column, "value": np.quantile(x, np.linspace(0, 1, points)), "weight": len(x) / points}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"column": [], "value": [], "weight": []})


def _quantiles(sketch: pd.DataFrame, column: str, fractions: Sequence[float]) -> list[float]:
    """Quantiles of a column from its blocks' sketches (``points`` rows per block reach the driver,
    never the rows themselves)."""
    q = sketch[sketch["column"] == column].sort_values("value")
    cumulative = q["weight"].cumsum().to_numpy() / q["weight"].sum()
    values = q["value"].to_numpy()
    return [float(values[min(int(np.searchsorted(cumulative, f, side="left")), len(values) - 1)]) for f in fractions]


def _timestamp_sketch(batch: pd.DataFrame, column: str, points: int) -> pd.DataFrame:
    return _block_quantiles({column: parse_number(batch[column]).to_numpy()}, points)


NONZERO = "\x00nonzero"  # a numeric's non-zero values, as a column of the sketch


def _numeric_sketch(batch: pd.DataFrame, schema: LogSchema, cuts: tuple[float, float], points: int) -> pd.DataFrame:
    values = _numeric_values(_rows_of(batch, "train", schema, cuts), schema)
    return _block_quantiles({**values, **{c + NONZERO: x[x != 0] for c, x in values.items()}}, points)


def _cut_points(good: ray.data.Dataset, schema: LogSchema, points: int = 1001) -> tuple[float, float]:
    """Where valid and test begin: timestamps that cut the rows in the schema's fractions (from each
    block's quantiles weighted by its rows, so a few far-off timestamps do not empty a split), or hash
    fractions."""
    train_end = 1.0 - schema.split.valid_fraction - schema.split.test_fraction
    if train_end <= 0:
        raise PreprocessError("split: valid_fraction + test_fraction must leave rows for train")
    fractions = (train_end, 1.0 - schema.split.test_fraction)
    if schema.split.by == "hash":
        return fractions
    sketch = good.select_columns([schema.timestamp]).map_batches(
        _timestamp_sketch, fn_kwargs={"column": schema.timestamp, "points": points}, batch_format="pandas", batch_size=None
    ).to_pandas()
    cuts = _quantiles(sketch, schema.timestamp, fractions)
    return cuts[0], max(cuts)


def _numeric_bins(good: ray.data.Dataset, schema: LogSchema, cuts: tuple[float, float], numeric: list[NumericField],
                  points: int = 257) -> list[NumericField]:
    """With ``preprocess.numeric_bin_edges: quantile``, the numerics with their quantile bin edges
    (``preprocess.numeric_bins`` bins of train values, in standardised units). Repeated quantiles merge,
    so an amount that is mostly zero would keep one bin for all its non-zero values, where its
    information is: when zeros fill more than one bin, the quantiles of the non-zero values are edges too."""
    bins = schema.preprocess.numeric_bins
    if not numeric or bins < 2 or schema.preprocess.numeric_bin_edges != "quantile":
        return numeric
    position = schema.timestamp if schema.split.by == "time" else KEY  # what split_of reads
    columns = list(dict.fromkeys([position, *(f.column for f in schema.model_features if f.type == "numeric")]))
    sketch = good.select_columns(columns).map_batches(
        _numeric_sketch, fn_kwargs={"schema": schema, "cuts": cuts, "points": points}, batch_format="pandas", batch_size=None
    ).to_pandas()
    weight = sketch.groupby("column")["weight"].sum()
    fractions = np.linspace(0, 1, bins + 1)
    out = []
    for f in numeric:
        quantiles = _quantiles(sketch, f.name, fractions)
        if weight.get(f.name + NONZERO, 0.0) and 1 - weight[f.name + NONZERO] / weight[f.name] > 1 / bins:
            quantiles += _quantiles(sketch, f.name + NONZERO, fractions)
        edges = np.unique(np.round((np.asarray(quantiles) - f.mean) / f.std, 6))
        out.append(f.model_copy(update={"bins": [float(e) for e in edges]}) if len(edges) >= 2 else f)
    return out
