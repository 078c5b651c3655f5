"""Raw log sources, checked on the driver before any Ray job: which files, which columns.

A source is a file, a directory or a URI that pyarrow's filesystems read (local paths, ``s3://``,
``gs://``, …), or a list of them. The first file of each source is opened to read its columns, so a
declared column that the data lacks is one line naming the file and the column, not a Ray traceback.
A ``.zip`` archive holding one file is unpacked into a staging directory first; ``.gz`` and ``.bz2``
are read as they are.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tamor.platform.schema import LogSchema, SchemaError

_COMPRESSION = {".gz": "gzip", ".bz2": "bz2"}
# What a file in a source directory may be called, by the schema's format (any case, compressed or not).
EXTENSIONS = {"csv": (".csv", ".tsv", ".txt"), "json": (".json", ".jsonl", ".ndjson"), "parquet": (".parquet", ".pq")}


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), str(Path(path).resolve())


def list_files(source: str) -> tuple[pafs.FileSystem, list[str]]:
    """The data files of a source (a directory's files, recursively, skipping hidden and ``_`` names)."""
    fs, root = _filesystem(source)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise SchemaError(f"{source}: no such file or directory")
    if info.type == pafs.FileType.File:
        return fs, [root]
    files = sorted(
        f.path for f in fs.get_file_info(pafs.FileSelector(root, recursive=True))
        if f.type == pafs.FileType.File and not any(part.startswith((".", "_")) for part in Path(f.path).relative_to(root).parts)
    )
    if not files:
        raise SchemaError(f"{source}: the directory holds no data files")
    return fs, files


def data_extension(path: str) -> str:
    """``a/B.CSV.gz`` → ``.csv``: the lower-case extension under any compression suffix."""
    name = Path(path).name.lower()
    for suffix in (*_COMPRESSION, ".zst", ".lz4", ".br"):
        name = name.removesuffix(suffix)
    return Path(name).suffix


def source_files(sources: list[str], fmt: str) -> list[str]:
    """Every file the sources hold, each of which will be read (paths or URIs). A file named on its own is read
    whatever its name; a directory's files must carry an extension of ``fmt`` (any case), and a directory
    holding any other file is refused, naming them: a file that would not be read must not vanish in silence."""
    files, foreign = [], []
    for source in sources:
        fs, found = list_files(source)
        scheme = source.split("://", 1)[0] + "://" if "://" in source else ""
        if fs.get_file_info(_filesystem(source)[1]).type == pafs.FileType.Directory:
            foreign += [scheme + f for f in found if data_extension(f) not in EXTENSIONS[fmt]]
        files += [scheme + f for f in found]
    if foreign:
        raise SchemaError(f"{len(foreign)} file(s) in the source are not {fmt} ({', '.join(EXTENSIONS[fmt])}), the schema's "
                          f"source.format: {', '.join(foreign[:5])}{' …' if len(foreign) > 5 else ''}; move them out, or "
                          "preprocess them with a schema of their format")
    return files


def unzip(source: str, staging: Path) -> str:
    """A ``.zip`` of one data file → that file, unpacked under ``staging``; other sources unchanged."""
    if not source.lower().endswith(".zip"):
        return source
    fs, path = _filesystem(source)
    with fs.open_input_file(path) as f, zipfile.ZipFile(io.BytesIO(f.read())) as archive:
        members = [m for m in archive.namelist() if not m.endswith("/") and not Path(m).name.startswith(".")]
        if len(members) != 1:
            raise SchemaError(f"{source}: a zip source must hold exactly one data file, it holds {members}")
        staging.mkdir(parents=True, exist_ok=True)
        return archive.extract(members[0], staging)


def _first_line(fs: pafs.FileSystem, path: str) -> str:
    compression = _COMPRESSION.get(Path(path).suffix.lower())
    with fs.open_input_stream(path, compression=compression) as stream:
        head = stream.read(1 << 16).decode("utf-8-sig", errors="replace")  # a BOM is not part of the first name
    return head.splitlines()[0] if head else ""


def file_columns(fs: pafs.FileSystem, path: str, schema: LogSchema) -> list[str]:
    """The columns of one raw file as the schema's source options read it."""
    fmt = schema.source.format
    try:
        if fmt == "parquet":
            return list(pq.read_schema(path, filesystem=fs).names)
        line = _first_line(fs, path)
        if fmt == "json":
            return list(json.loads(line)) if line else []
        opts = schema.source.csv
        if opts.column_names:
            return list(opts.column_names)
        names = next(csv.reader([line], delimiter=opts.delimiter), [])
        return [n.strip() for n in names] if opts.strip else names
    except (pa.ArrowInvalid, OSError, ValueError) as e:
        raise SchemaError(f"{path}: cannot be read as {fmt} ({e})") from None


def check_columns(source: str | list[str], schema: LogSchema) -> list[str]:
    """The columns of the source's first file; :class:`SchemaError` naming the file if a declared one is missing."""
    columns: list[str] = []
    for one in [source] if isinstance(source, str) else source:
        fs, files = list_files(one)
        columns = file_columns(fs, files[0], schema)
        missing = [c for c in schema.raw_columns() if c not in columns]
        if missing:
            raise SchemaError(
                f"{files[0]}: no column {', '.join(map(repr, missing))} (declared by schema {schema.name!r}); "
                f"the file has {len(columns)} columns: {', '.join(columns[:12])}{', …' if len(columns) > 12 else ''}"
            )
    return columns


def read_failure(error: BaseException, sources: list[str], fmt: str) -> SchemaError:
    """A failed Ray Data read as one line: which file, the innermost reason, what to check."""
    messages, seen, current = [], set(), error
    while current is not None and id(current) not in seen:  # the chain across Ray's task boundary
        seen.add(id(current))
        text = str(current).strip().splitlines()
        if text:
            messages.append(text[-1] if text[0].startswith("ray::") else text[0])
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    named = [m for m in messages if any(src in m for src in sources)]
    where = next((src for src in sources if any(src in m for m in messages)), None)
    reason = (named or messages or [type(error).__name__])[-1].split(". ")[0]
    # Ray's message may lose the reader's reason and the file: find them again (an error path, so reading is fine).
    for candidate in [where] if where else sources:
        if found := _probe(candidate, fmt):
            where, reason = candidate, found
            break
    return SchemaError(
        f"{where or ', '.join(sources)}: cannot be read as {fmt} ({reason[:300]}); check the schema's source.format, that the file is whole "
        "and UTF-8 text for CSV/JSON"
    )


def _probe(path: str, fmt: str) -> str | None:
    """Why ``path`` does not read as ``fmt``, found on the driver (an error path: reading it again is fine)."""
    fs, inner = _filesystem(path)
    try:
        if fmt == "parquet":
            with fs.open_input_file(inner) as f:
                pq.ParquetFile(f)
            return None
        with fs.open_input_stream(inner, compression=_COMPRESSION.get(Path(inner).suffix.lower())) as f:
            return _bad_text(f, fmt)
    except Exception as e:  # noqa: BLE001 - the reason is what we are after
        return str(e).splitlines()[0]


def _bad_text(stream: pa.NativeFile, fmt: str) -> str | None:
    """The first byte that is not UTF-8, or for JSON lines the first line that is not a JSON object, by number."""
    decoder, offset, number, pending = codecs.getincrementaldecoder("utf-8-sig")(), 0, 0, ""
    while chunk := stream.read(1 << 20):
        try:
            text = pending + decoder.decode(chunk)
        except UnicodeDecodeError as e:
            return f"not UTF-8 text: byte {chunk[e.start]:#04x} at offset {offset + e.start}"
        offset += len(chunk)
        *lines, pending = text.split("\n")
        for line in lines if fmt == "json" else ():
            number += 1
            if line.strip() and not isinstance(_json_or_none(line), dict):
                return f"line {number} is not a JSON object: {line[:60]!r}"
    if fmt == "json" and pending.strip() and not isinstance(_json_or_none(pending), dict):
        return f"line {number + 1} is not a JSON object: {pending[:60]!r}"
    return None


def _json_or_none(line: str) -> object:
    try:
        return json.loads(line)
    except ValueError:
        return None
