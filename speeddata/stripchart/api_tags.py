"""REST endpoints for tags (``/api/tags``), pivot jobs (``/api/pivot``) and exports."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from speeddata.config import Config
from speeddata.control import announcer
from speeddata.errors import NotFoundError
from speeddata.sinks import SUFFIXES
from speeddata.stripchart.jobs import PivotJobs, Task
from speeddata.tagrecord import MAX_CHANNELS, MAX_NOTE
from speeddata.tags import TagStore, check_name, resolve_range
from speeddata.times import format_time, parse_time

log = logging.getLogger("speeddata.stripchart")


class TagRequest(BaseModel):
    name: str = Field(max_length=128, description="tag name: letters, digits, '_', '-', '.'")
    start: str = Field("now", max_length=64,
                       description="'now', relative like '-5m', or ISO 8601")
    end: str | None = Field(None, max_length=64,
                            description="as start; omitted: an open tag, stopped later")
    note: str = Field("", max_length=MAX_NOTE)
    channels: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, max_length=MAX_CHANNELS, description="empty: all channels")


class StopRequest(BaseModel):
    end: str = Field("now", max_length=64)


def register(app: FastAPI, config: Config, tags: TagStore | None = None) -> None:
    """The tag endpoints on ``tags`` (shared with every relay); None: the store is made at
    the first request, so that making the app writes nothing (``serve`` makes it first,
    for a bad control key to stop the server at start)."""
    made = [tags] if tags is not None else []
    lock = threading.Lock()  # the endpoints run in the thread pool

    def store() -> TagStore:
        with lock:
            if not made:
                made.append(TagStore(config.cache.dir, announcer(config)))
            return made[0]

    @app.get("/api/tags")
    def list_tags() -> list[dict]:
        """Every tag, oldest first."""
        return [t.as_dict() for t in store().list()]

    @app.post("/api/tags", status_code=201)
    def create_tag(request: TagRequest) -> dict:
        """Create a tag; without ``end`` it stays open until ``POST /api/tags/{name}/stop``."""
        now = time.time_ns()
        start = parse_time(request.start, now)
        end = parse_time(request.end, now) if request.end else None
        return store().add(request.name, start, end, request.note, tuple(request.channels),
                         now).as_dict()

    @app.post("/api/tags/{name}/stop")
    def stop_tag(name: str, request: StopRequest | None = None) -> dict:
        """Close an open tag at ``end`` (default now)."""
        return store().stop(check_name(name), parse_time((request or StopRequest()).end,
                                                       time.time_ns())).as_dict()

    @app.delete("/api/tags/{name}", status_code=204)
    def delete_tag(name: str) -> None:
        """Forget a tag (its data is no longer protected from retention)."""
        store().delete(check_name(name))


# -- pivot jobs and exports -------------------------------------------------------------


class PivotRequest(BaseModel):
    tag: str | None = Field(None, max_length=128, description="export this tag's range")
    start: str | None = Field(None, max_length=64,
                              description="or a range: 'now', '-5m', ISO 8601")
    end: str | None = Field(None, max_length=64)
    channels: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, max_length=1000)
    signals: list[Annotated[str, Field(max_length=257)]] = Field(
        default_factory=list, max_length=10000)
    decimate: int = Field(1, ge=1, le=10**9, description="keep every Nth record")
    compression: Literal["gzip", "lzf", "none"] | None = None
    format: Literal["hdf5", "csv", "parquet"] | None = Field(
        None, description="hdf5 (one file), csv or parquet (a directory, a file per channel)")
    force: bool = False


def pivot_task(config: Config, request: PivotRequest, now: int) -> tuple[str, Task]:
    """The export's name and the pivot's task for ``request``; TimeError if it names no
    range."""
    span = resolve_range(config.cache.dir, request.tag, request.start, request.end, now)
    start, end, name = span.start_ns, span.end_ns, span.name
    attrs: dict[str, str] = {}
    channels = request.channels
    if span.tag is not None:
        attrs = {"tag": span.tag.name, "note": span.tag.note}
        channels = channels or list(span.tag.channels)
    compression = request.compression or config.exports.compression
    export_format = request.format or config.exports.format
    options = {"channels": channels or None, "signals": request.signals or None,
               "decimate": request.decimate, "force": request.force, "attrs": attrs,
               "compression": None if compression == "none" else compression,
               "export_format": export_format, "channels_dir": config.channels.dir}
    out = config.exports.dir / f"{name}{SUFFIXES[export_format]}"
    return name, Task(config.cache.dir, out, start, end, options, attrs.get("tag"))


def _export_path(config: Config, name: str) -> Path:
    """An export by name: an HDF5 file, or a directory of CSV or Parquet files."""
    if len(name.encode()) > 255 or "/" in name or "\\" in name or name.startswith("."):
        raise NotFoundError(f"no export named {name[:80]!r}; GET /api/exports lists them")
    path = config.exports.dir / name.removesuffix(".zip")
    found = ((path / "export.json").is_file() if name.endswith(".zip")
             else path.suffix == ".h5" and path.is_file())
    if not found:
        raise NotFoundError(f"no export named {name!r}; GET /api/exports lists them")
    return path


def _exports(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if not p.name.startswith(".") and (
        (p.is_file() and p.suffix == ".h5") or (p / "export.json").is_file())]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(
        f.stat().st_size for f in path.iterdir())


def register_exports(app: FastAPI, config: Config) -> PivotJobs:
    jobs = app.state.pivot_jobs = PivotJobs(config.cache.dir)

    @app.post("/api/pivot", status_code=202)
    def start_pivot(request: PivotRequest) -> dict:
        """Start a pivot as a background job; poll ``GET /api/pivot/{id}`` for progress."""
        return jobs.submit(*pivot_task(config, request, time.time_ns())).as_dict()

    @app.get("/api/pivot")
    def list_jobs() -> list[dict]:
        return jobs.list()

    @app.get("/api/pivot/{job_id}")
    def get_job(job_id: str) -> dict:
        return jobs.get(job_id).as_dict()

    @app.delete("/api/pivot/{job_id}")
    def cancel_job(job_id: str) -> dict:
        """Cancel a waiting or running pivot; a finished one is left as it is."""
        return jobs.cancel(job_id).as_dict()

    @app.get("/api/exports")
    def list_exports() -> list[dict]:
        """Exports written by pivot, newest first: HDF5 files, and directories of CSV or
        Parquet files (downloaded as NAME.zip)."""
        return [{"name": p.name if p.is_file() else f"{p.name}.zip", "bytes": _size(p),
                 "format": "hdf5" if p.is_file() else json.loads(
                     (p / "export.json").read_text()).get("format", ""),
                 "modified": format_time(p.stat().st_mtime_ns)}
                for p in _exports(config.exports.dir)]

    @app.get("/api/exports/{name}")
    def download(name: str) -> FileResponse:
        path = _export_path(config, name)
        if path.is_file():
            return FileResponse(path, media_type="application/x-hdf5", filename=name)
        fd, zipped = tempfile.mkstemp(suffix=".zip")  # a directory: zipped for the browser
        os.close(fd)
        shutil.make_archive(zipped.removesuffix(".zip"), "zip", path)
        return FileResponse(zipped, media_type="application/zip", filename=f"{path.name}.zip",
                            background=BackgroundTask(os.unlink, zipped))

    @app.delete("/api/exports/{name}", status_code=204)
    def delete_export(name: str) -> None:
        path = _export_path(config, name)
        if path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path)

    return jobs
