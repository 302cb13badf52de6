"""``speeddata block run``: one block in its own process. The thin loop around
``BlockEngine``: read the full-rate group, pass the time in, send what comes out through
the relay with the Sender, follow the channels directory, write the status file."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import time
from collections.abc import Callable
from pathlib import Path

from speeddata import multicast, status
from speeddata.blocks.core import BlockEngine
from speeddata.blocks.declare import Block
from speeddata.config import Config
from speeddata.errors import ConfigError
from speeddata.schemas import Channel, DirWatch, Registry, load_channels, store_schema
from speeddata.snapshots import BlockSnapshot

log = logging.getLogger("speeddata.blocks")

STATUS_SECONDS = 1.0
WATCH_SECONDS = 0.5  # how often the channels directory is looked at
IDLE_SECONDS = 0.2  # the longest wait for datagrams: the stop flag is polled this often
READ_AT_ONCE = 1024  # datagrams read before the engine is fed and asked for its batches


def status_name(spec: Block) -> str:
    """The block's status file (and its line in ``speeddata status``)."""
    return f"block-{spec.output}"


def register(spec: Block, found: Config, registry: Registry, url: str | None,
             replace: bool) -> Channel:
    """The output channel registered like any channel: in the channels directory (a
    relay of this host takes it within a second), or at the stripchart server ``url``
    (another host's). Another schema under its name is refused unless ``replace``."""
    from speeddata.sender import RELAY_TAKES_S, register_channel

    schema = spec.schema()
    if url:
        from speeddata.schemas import channel_from_schema

        channel = channel_from_schema(schema, f"<block {spec.name}>", limits=True)
        register_channel(url, channel, replace=replace)
        return channel
    known = registry.get(spec.output)
    channel = store_schema(found.channels.dir, schema, registry, replace)
    if known is None or known.schema != schema:
        log.info("channel %s registered in %s; waiting %g s for the relay to take it",
                 spec.output, found.channels.dir, RELAY_TAKES_S)
        time.sleep(RELAY_TAKES_S)
    return channel


def run(spec: Block, found: Config, relay: tuple[str, int], stopping: Callable[[], bool],
        source: Path, url: str | None = None, replace: bool = False) -> BlockSnapshot:
    """Run ``spec`` until ``stopping()``, sending to ``relay`` (host, port); its final
    statistics."""
    from speeddata.sender import Sender

    host, port = relay
    group = found.multicast.full
    if group is None:
        raise ConfigError("[multicast] full: the full-rate group is off; a block reads it")
    folder = found.channels.dir
    registry = load_channels(folder, log)
    output = register(spec, found, registry, url, replace)
    registry = load_channels(folder, log)
    engine = BlockEngine(spec, output, registry, time.monotonic)
    missing = engine.set_registry(registry)
    watch = DirWatch(folder)
    started = time.time()
    name = status_name(spec)
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(multicast.listener(group, found.multicast.interface))
        sock.setblocking(False)
        sender = stack.enter_context(Sender(output, host=host, port=port))
        stack.callback(status.remove, found.cache.dir, name)
        log.info("block %s (%s) reads %s on %s, sends %s to %s:%d", spec.name, source,
                 ", ".join(spec.inputs), group, spec.output, host, port)
        if missing:
            log.warning("block %s: no channel %s yet; waiting for it (a relay's channels "
                        "directory: %s)", spec.name, ", ".join(missing), folder)
        next_watch = next_status = 0.0

        def snapshot() -> BlockSnapshot:
            return BlockSnapshot(
                service="block", pid=os.getpid(), started=started, written=time.time(),
                file=str(source), group=str(group), relay=f"{host}:{port}",
                missing_inputs=list(missing), cpu_seconds=round(time.process_time(), 3),
                kernel_drops=multicast.kernel_drops(sock), sender=sender.statistics(),
                **engine.statistics())

        while not stopping():
            now = time.monotonic()
            wake = engine.wake_at()
            wait = IDLE_SECONDS if wake is None else min(IDLE_SECONDS, max(0.0, wake - now))
            datagrams: list[bytes] = []
            try:
                if select.select([sock], [], [], wait)[0]:
                    while len(datagrams) < READ_AT_ONCE:
                        datagrams.append(sock.recv(65535))
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:  # the socket boundary: logged, never fatal
                log.warning("block %s: reading the group: %s", spec.name, exc)
            now = time.monotonic()
            if datagrams:
                engine.feed(datagrams, now)
            for datagram in engine.flush(now):
                sender.send_datagram(datagram)
            if now >= next_watch:
                next_watch = now + WATCH_SECONDS
                if watch.changed():
                    registry = load_channels(folder, log)
                    was, missing = missing, engine.set_registry(registry)
                    if was and not missing:
                        log.info("block %s: all its inputs are known now", spec.name)
            if now >= next_status:
                next_status = now + STATUS_SECONDS
                try:
                    status.write(found.cache.dir, name, snapshot())
                except OSError as exc:
                    log.warning("block %s: status file not written: %s", spec.name, exc)
        for datagram in engine.flush(time.monotonic(), everything=True):
            sender.send_datagram(datagram)
        final = snapshot()
    log.info("block %s stopped: %d batches, %d records in, %d out, errors %s, refused %s",
             spec.name, final.batches, final.records_in, final.records_out,
             final.errors or "none", final.refused or "none")
    return final
