"""Writes the bad-input corpus next to this file: `python tests/data/bad_inputs/make.py`.

Each file is one way a prompts file goes wrong (tests/test_prompts.py reads every one of them):
    invalid_utf8.jsonl    line 2 holds bytes that are not UTF-8 (lines 1 and 3 are good)
    mixed_types.jsonl     `id` is a number in some rows and text in others; `tag` mixes int, text, bool, object
    bom.jsonl             starts with a UTF-8 byte-order mark
    empty.jsonl           0 bytes
    blank_lines.jsonl     only blank lines
    empty.parquet         0 bytes
    zero_rows.parquet     a valid Parquet file with the columns and no row
    truncated.parquet     the first half of a valid Parquet file (no footer)
    garbage.parquet       text, not Parquet
    invalid_utf8.parquet  a text column holding bytes that are not UTF-8 in row 2
    array.json            a pretty-printed JSON array: two good rows and one that is not an object
    broken_array.json     a JSON array with a missing comma
    lines.json            one object per line under a .json name
    prompts.csv           a CSV file
    pathological.jsonl    lines 2-5 parse badly or cannot be stored: nested 100,000 deep, an integer of 5,000
                          digits, a lone surrogate (a \\ud800 escape) in the question, nested 100 deep (lines 1, 6 good)
    deep_array.json       a JSON array with an element nested 100,000 deep
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent


def row(i: int, **extra) -> dict:
    return {"id": f"p{i}", "product_info": {"name": f"Lamp {i}"}, "question": f"how bright is lamp {i}?", **extra}


def line(value: dict) -> bytes:
    return json.dumps(value).encode() + b"\n"


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def main() -> None:
    files: dict[str, bytes] = {
        "invalid_utf8.jsonl": line(row(1))
        + b'{"id": "p2", "product_info": "caf\xe9 \xff", "question": "q"}\n'
        + line(row(3)),
        "mixed_types.jsonl": line(row(1, id=1, tag=5))
        + line(row(2, tag="new"))
        + line(row(3, id=3, tag=True))
        + line(row(4, id="p4", tag={"a": 1})),
        "bom.jsonl": b"\xef\xbb\xbf" + line(row(1)) + line(row(2)),
        "empty.jsonl": b"",
        "blank_lines.jsonl": b"\n   \n\t\n\n",
        "empty.parquet": b"",
        "zero_rows.parquet": parquet_bytes(
            pa.table(
                {
                    "id": pa.array([], pa.string()),
                    "product_info": pa.array([], pa.string()),
                    "question": pa.array([], pa.string()),
                }
            )
        ),  # fmt: skip
        "garbage.parquet": b"this is not a parquet file at all\n" * 4,
        "array.json": json.dumps([row(1), row(2), "not an object"], indent=2).encode(),
        "broken_array.json": b'[\n  {"id": "p1", "product_info": "x", "question": "q"}\n  {"id": "p2"}\n]\n',
        "lines.json": line(row(1)) + line(row(2)),
        "prompts.csv": b"id,product_info,question\np1,lamp,how bright?\n",
        "pathological.jsonl": line(row(1))
        + b'{"id": "p2", "product_info": ' + b"[" * 100_000 + b"]" * 100_000 + b', "question": "q"}\n'
        + b'{"id": "p3", "product_info": {"lumen": ' + b"9" * 5000 + b'}, "question": "q"}\n'
        + b'{"id": "p4", "product_info": "lamp", "question": "how bright \\ud800?"}\n'
        + b'{"id": "p5", "product_info": {"a": ' + b"[" * 100 + b"]" * 100 + b'}, "question": "q"}\n'
        + line(row(6)),
        "deep_array.json": b'[{"id": "p1", "product_info": ' + b"[" * 100_000 + b"]" * 100_000 + b', "question": "q"}]',
    }
    good = parquet_bytes(pa.Table.from_pylist([row(i, product_info=f"Lamp {i}") for i in range(40)]))
    files["truncated.parquet"] = good[: len(good) // 2]
    raw = pa.array([b"good text", b"caf\xe9 \xff", b"also good"], pa.binary())
    question = pa.Array.from_buffers(pa.string(), len(raw), raw.buffers())  # bytes as they are, no UTF-8 check
    files["invalid_utf8.parquet"] = parquet_bytes(
        pa.table({"id": ["p1", "p2", "p3"], "product_info": ["lamp", "lamp", "lamp"], "question": question})
    )
    for name, data in files.items():
        (HERE / name).write_bytes(data)


if __name__ == "__main__":
    main()
