"""A channel's columns as Arrow: the one schema that Parquet exports and queries share.

The time field and ``receive_time`` are UTC timestamps in ns, numbers keep their type
(NaN stays NaN, not null, as in the HDF5 and the cache), text is a string column; each
field carries its unit, doc and Avro type, the schema the channel's Avro schemas.
pyarrow is imported by the callers that need it (``speeddata[parquet]``, ``[query]``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from speeddata.errors import SpeeddataError
from speeddata.readout import Column


def pyarrow() -> Any:
    """The pyarrow module, or an error saying which extra installs it."""
    try:
        import pyarrow as pa
    except ModuleNotFoundError:
        raise SpeeddataError("this needs pyarrow: pip install 'speeddata[query]' (or "
                             "'speeddata[parquet]')") from None
    return pa


def arrow_type(pa: Any, dtype: Any) -> Any:
    """The Arrow type of a column of numpy ``dtype`` (text: any object column)."""
    kind = np.dtype(dtype).kind
    return {"f": pa.float64(), "i": pa.int64(), "b": pa.bool_()}.get(kind, pa.string())


def arrow_schema(time_name: str, fields: Sequence[tuple[str, Any, dict[str, str]]],
                 schemas: list[dict], renamed: dict[str, str] | None = None) -> Any:
    """The schema of a channel's table: ``time_name``, ``receive_time``, then each of
    ``fields`` as ``(name, numpy dtype, metadata)``; ``schemas`` (oldest first) and what
    was ``renamed`` (table name -> field) in its metadata."""
    pa = pyarrow()
    columns = [pa.field(time_name, pa.timestamp("ns", tz="UTC")),
               pa.field("receive_time", pa.timestamp("ns", tz="UTC"))]
    columns += [pa.field(name, arrow_type(pa, dtype), metadata=about)
                for name, dtype, about in fields]
    return pa.schema(columns, metadata={
        "schema": json.dumps(schemas[-1]), "schemas": json.dumps(schemas),
        **({"renamed": json.dumps(renamed)} if renamed else {})})


def channel_schema(time_field: str, columns: Sequence[Column], names: dict[str, str],
                   schemas: list[dict]) -> Any:
    """``arrow_schema`` of a range's columns, each under its name in ``names`` (see
    ``sinks.column_names``; ``field`` in its metadata where that is not the field's)."""
    fields = []
    for c in columns:
        about = {"unit": c.unit, "doc": c.doc, "avro_type": c.avro_type,
                 **({"expression": c.expression} if c.expression else {})}
        if names[c.name] != c.name:
            about["field"] = c.name
        fields.append((names[c.name], c.dtype, about))
    return arrow_schema(names[time_field], fields, schemas,
                        {n: f for f, n in names.items() if f != n})


def record_batch(schema: Any, time: np.ndarray, receive: np.ndarray,
                 columns: Sequence[np.ndarray]) -> Any:
    """One batch of ``schema``: the times (int64 ns) and the columns in its order."""
    pa = pyarrow()
    arrays = [pa.array(time, pa.int64()).cast(schema.field(0).type),
              pa.array(receive, pa.int64()).cast(schema.field(1).type)]
    arrays += [pa.array(values, schema.field(i + 2).type) for i, values in enumerate(columns)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
