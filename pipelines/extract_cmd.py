"""The core of ``copydesk extract PATH... [--url URL] --output FILE``.

Reads ``.html`` / ``.html.gz`` files (or folders of them), runs the *same* extraction as
the pipeline (``extract_article`` on the same :class:`ExtractPool`) and writes one JSON
line per input file: the extraction fields, or ``error`` {reason, message}.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path

import orjson

from copydesk.transforms.extract.pool import ExtractFailure, ExtractPool
from copydesk.transforms.extract.core import ExtractConfig, Extracted
from copydesk.transforms.fetch.charset import decode_html
from copydesk.transforms.fetch.errors import FetchFailure

__all__ = ["run_extract", "collect_inputs"]

_SUFFIXES = (".html", ".htm", ".html.gz", ".htm.gz")


def collect_inputs(paths: list[str]) -> list[Path]:
    """Files named directly, plus HTML files found (recursively, sorted) in named folders."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            out.extend(sorted(f for f in path.rglob("*") if f.is_file() and f.name.lower().endswith(_SUFFIXES)))
        else:
            out.append(path)
    return out


def _read_html(path: Path) -> str:
    data = path.read_bytes()
    if path.name.lower().endswith(".gz") or data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return decode_html(data)[0]  # as the fetch stage decodes a fetched page (BOM, <meta charset>, detection)


def _record(path: Path, res: Extracted | ExtractFailure) -> dict:
    if isinstance(res, ExtractFailure):
        return {"input": str(path), "error": {"reason": res.reason, "message": res.message}}
    rec = {"input": str(path)}
    rec.update(dataclasses.asdict(res))
    del rec["content_hash"], rec["sketch"]  # the pipeline's (ExtractConfig.sketch), not the extraction's
    return rec


def run_extract(
    paths: list[str],
    output: str,
    url: str | None = None,
    config: ExtractConfig = ExtractConfig(),
    workers: int | None = None,
) -> dict:
    """Extract every input file and write JSON lines to ``output``; return counts.

    ``url`` is the page URL given to the extractor (used for metadata and for the
    agency-site rule); it applies to every input. Unreadable files become ``error``
    records (reason ``decode``) rather than aborting the run. Pages go through the pool in
    chunks so memory stays bounded for large folders.
    """
    files = collect_inputs(paths)
    counts = {"inputs": len(files), "ok": 0, "errors": 0, "reasons": {}}
    out_path = Path(output)
    if out_path.parent and not out_path.parent.exists():
        out_path.parent.mkdir(parents=True, exist_ok=True)
    chunk = 32
    with ExtractPool(config, workers=workers) as pool, open(out_path, "wb") as fh:
        for start in range(0, len(files), chunk):
            batch = files[start:start + chunk]
            pages: list[tuple[str, str | None]] = []
            pre: dict[int, ExtractFailure] = {}
            for k, f in enumerate(batch):
                try:
                    pages.append((_read_html(f), url))
                except (OSError, EOFError, gzip.BadGzipFile, FetchFailure) as exc:
                    pre[k] = ExtractFailure("decode", f"{type(exc).__name__}: {exc}")
                    pages.append(("", url))
            todo = [k for k in range(len(batch)) if k not in pre]
            results = dict(zip(todo, pool.extract_many([pages[k] for k in todo])))
            results.update(pre)
            for k, f in enumerate(batch):
                res = results[k]
                if isinstance(res, ExtractFailure):
                    counts["errors"] += 1
                    counts["reasons"][res.reason] = counts["reasons"].get(res.reason, 0) + 1
                else:
                    counts["ok"] += 1
                fh.write(orjson.dumps(_record(f, res)) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    return counts
