"""REST endpoints for tags (``/api/tags``), pivot jobs (``/api/pivot``) and exports."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from speeddata.config import Config
from speeddata.pivot import pivot
from speeddata.tags import TagError, TagStore, format_time, parse_time

log = logging.getLogger("speeddata.stripchart")


class TagRequest(BaseModel):
    name: str = Field(description="tag name: letters, digits, '_', '-', '.'")
    start: str = Field("now", description="'now', relative like '-5m', or ISO 8601")
    end: str | None = Field(None, description="as start; omitted: an open tag, stopped later")
    note: str = ""
    channels: list[str] = Field(default_factory=list, description="empty: all channels")


class StopRequest(BaseModel):
    end: str = "now"


def register(app: FastAPI, config: Config) -> None:
    store = TagStore(config.cache.dir)

    def fail(exc: TagError, code: int = 400) -> HTTPException:
        return HTTPException(status_code=code, detail=str(exc))

    @app.get("/api/tags")
    def list_tags() -> list[dict]:
        """Every tag, oldest first."""
        return [t.as_dict() for t in store.list()]

    @app.post("/api/tags", status_code=201)
    def create_tag(request: TagRequest) -> dict:
        """Create a tag; without ``end`` it stays open until ``POST /api/tags/{name}/stop``."""
        now = time.time_ns()
        try:
            start = parse_time(request.start, now)
            end = parse_time(request.end, now) if request.end else None
            return store.add(request.name, start, end, request.note, tuple(request.channels),
                             now).as_dict()
        except TagError as exc:
            raise fail(exc, 409 if "exists" in str(exc) else 400) from None

    @app.post("/api/tags/{name}/stop")
    def stop_tag(name: str, request: StopRequest | None = None) -> dict:
        """Close an open tag at ``end`` (default now)."""
        try:
            return store.stop(name, parse_time((request or StopRequest()).end,
                                               time.time_ns())).as_dict()
        except TagError as exc:
            raise fail(exc, 404 if "no tag named" in str(exc) else 400) from None

    @app.delete("/api/tags/{name}", status_code=204)
    def delete_tag(name: str) -> None:
        """Forget a tag (its data is no longer protected from retention)."""
        try:
            store.delete(name)
        except TagError as exc:
            raise fail(exc, 404) from None


# -- pivot jobs and exports -------------------------------------------------------------


class PivotRequest(BaseModel):
    tag: str | None = Field(None, description="export this tag's range")
    start: str | None = Field(None, description="or a range: 'now', '-5m', ISO 8601")
    end: str | None = None
    channels: list[str] = Field(default_factory=list)
    signals: list[str] = Field(default_factory=list)
    decimate: int = 1
    compression: str | None = Field(None, description="gzip, lzf or none")
    force: bool = False


class PivotJobs:
    """Pivots run one at a time in a worker thread; the last 50 jobs are kept."""

    KEEP = 50

    def __init__(self, config: Config) -> None:
        self.config = config
        self.jobs: dict[str, dict] = {}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pivot")
        self.lock = threading.Lock()

    def submit(self, request: PivotRequest) -> dict:
        store = TagStore(self.config.cache.dir)
        now = time.time_ns()
        if request.tag:
            tag = store.get(request.tag)
            start, end = tag.start_ns, tag.end_ns if tag.end_ns is not None else now
            name, attrs = tag.name, {"tag": tag.name, "note": tag.note}
            channels = request.channels or list(tag.channels)
        elif request.start:
            start, end = parse_time(request.start, now), parse_time(request.end or "now", now)
            name = f"{format_time(start)}_{format_time(end)}".replace(":", "")
            attrs, channels = {}, request.channels
        else:
            raise TagError("give a tag, or a start (and end)")
        job = {"id": uuid.uuid4().hex[:12], "name": name, "state": "queued", "done": 0,
               "total": 0, "file": None, "error": None, "created": format_time(now)}
        with self.lock:
            self.jobs[job["id"]] = job
            for old in list(self.jobs)[: -self.KEEP]:
                del self.jobs[old]
        out = self.config.exports.dir / f"{name}.h5"
        compression = request.compression or self.config.exports.compression
        self.pool.submit(self._run, job, out, start, end, attrs, channels, request,
                         None if compression == "none" else compression)
        return job

    def _run(self, job: dict, out: Path, start: int, end: int, attrs: dict,
             channels: list[str], request: PivotRequest, compression: str | None) -> None:
        job["state"] = "running"

        def progress(done: int, total: int) -> None:
            job["done"], job["total"] = done, total

        try:
            result = pivot(self.config.cache.dir, out, start, end, channels=channels or None,
                           signals=request.signals or None, decimate=request.decimate,
                           compression=compression, force=request.force, attrs=attrs,
                           progress=progress)
            if "tag" in attrs:
                TagStore(self.config.cache.dir).mark_exported(attrs["tag"], time.time_ns())
            job.update(state="done", file=out.name, records=result.records,
                       seconds=round(result.seconds, 3))
        except Exception as exc:  # reported to the page, logged here
            log.warning("pivot job %s failed: %s", job["id"], exc)
            job.update(state="failed", error=str(exc))


def _export_path(config: Config, name: str) -> Path:
    path = config.exports.dir / name
    if "/" in name or name.startswith(".") or not name.endswith(".h5") or not path.is_file():
        raise HTTPException(404, f"no export named {name!r}; GET /api/exports lists them")
    return path


def register_exports(app: FastAPI, config: Config) -> None:
    jobs = PivotJobs(config)

    @app.post("/api/pivot", status_code=202)
    def start_pivot(request: PivotRequest) -> dict:
        """Start a pivot as a background job; poll ``GET /api/pivot/{id}`` for progress."""
        try:
            return jobs.submit(request)
        except TagError as exc:
            raise HTTPException(404 if "no tag named" in str(exc) else 400, str(exc)) from None

    @app.get("/api/pivot")
    def list_jobs() -> list[dict]:
        return list(jobs.jobs.values())

    @app.get("/api/pivot/{job_id}")
    def get_job(job_id: str) -> dict:
        if job_id not in jobs.jobs:
            raise HTTPException(404, f"no pivot job {job_id!r}")
        return jobs.jobs[job_id]

    @app.get("/api/exports")
    def list_exports() -> list[dict]:
        """HDF5 files written by pivot, newest first."""
        folder = config.exports.dir
        files = sorted(folder.glob("*.h5"), key=lambda p: p.stat().st_mtime, reverse=True) if (
            folder.is_dir()) else []
        return [{"name": p.name, "bytes": p.stat().st_size,
                 "modified": format_time(p.stat().st_mtime_ns)} for p in files]

    @app.get("/api/exports/{name}")
    def download(name: str) -> FileResponse:
        return FileResponse(_export_path(config, name), media_type="application/x-hdf5",
                            filename=name)

    @app.delete("/api/exports/{name}", status_code=204)
    def delete_export(name: str) -> None:
        _export_path(config, name).unlink()
