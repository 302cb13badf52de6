"""REST endpoints for tags: ``GET/POST/DELETE /api/tags``."""

from __future__ import annotations

import time

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from speeddata.config import Config
from speeddata.tags import TagError, TagStore, parse_time


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
