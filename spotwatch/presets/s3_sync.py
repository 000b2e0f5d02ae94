"""`s3-sync`: upload, with boto3 and in parallel, every file under a folder whose size or
modification time differs from its object's; what is not sent within T makes the step
`timeout`; the detail says how many files and bytes were sent.

    with: {path: /var/lib/trainer/checkpoints, to: "s3://my-bucket/ckpt/${instance_id}/"}

1. The folder is walked without following symlinks (a link to a file outside it is not sent:
   root reads, and whoever writes the folder must not choose what root uploads).
2. ListObjectsV2 under the prefix gives each object's size. A file whose object is missing or
   of another size is sent; for one of the same size, HeadObject reads the modification time
   kept in the object's metadata (`x-amz-meta-mtime`, seconds with nine decimals, as rclone
   keeps it), and a file whose time differs is sent.
3. Uploads go through boto3's transfer manager (multipart above 8 MiB), 16 at a time, each
   with its file's modification time in its metadata.
Every phase is bounded by the hook's limit: at its end, unfinished uploads are cancelled and
abandoned (their threads end on their own), so the step ends on time.

IAM: s3:ListBucket on the bucket (with the prefix), s3:GetObject (HeadObject) and
s3:PutObject on the prefix; `check` asks HeadBucket (s3:ListBucket).
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

from spotwatch.config.checks import leaf
from spotwatch.config.errors import describe
from spotwatch.config.values import absolute_path
from spotwatch.presets.base import (
    FAILED,
    INTERRUPTED,
    OK,
    TIMEOUT,
    Call,
    Preset,
    Requirement,
    Result,
)

CONCURRENCY = 16  # uploads and HeadObject calls at once
MTIME_KEY = "mtime"  # x-amz-meta-mtime
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
WAIT_SLICE = 0.25
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def s3_destination(value: Any) -> Tuple[str, str]:
    """`s3://BUCKET/PREFIX/` as (bucket, prefix ending in "/" or empty)."""
    if isinstance(value, str) and value.startswith("s3://"):
        bucket, _, prefix = value[5:].partition("/")
        if _BUCKET.fullmatch(bucket) and ".." not in bucket and not prefix.startswith("/"):
            return bucket, prefix if not prefix or prefix.endswith("/") else prefix + "/"
    raise ValueError(f"expected s3://BUCKET/PREFIX/, got {describe(value)}")


@dataclass(frozen=True)
class LocalFile:
    path: str
    key: str
    size: int
    mtime_ns: int


def mtime_text(mtime_ns: int) -> str:
    return f"{mtime_ns // 1_000_000_000}.{mtime_ns % 1_000_000_000:09d}"


def mtime_ns_of(text: Optional[str]) -> Optional[int]:
    """The metadata's modification time in nanoseconds, None when absent or not a time."""
    if not text or not re.fullmatch(r"\d+(\.\d+)?", text.strip()):
        return None
    whole, _, fraction = text.strip().partition(".")
    return int(whole) * 1_000_000_000 + int((fraction + "000000000")[:9])


def local_files(folder: str, prefix: str) -> List[LocalFile]:
    """Every regular file under `folder` (symlinks neither followed nor sent), sorted."""
    found: List[LocalFile] = []
    for here, dirs, names in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(here, name)
            try:
                info = os.lstat(full)
            except OSError:
                continue  # gone meanwhile
            if not stat.S_ISREG(info.st_mode):
                continue
            relative = os.path.relpath(full, folder).replace(os.sep, "/")
            found.append(LocalFile(full, prefix + relative, info.st_size, info.st_mtime_ns))
    return found


class S3Sync(Preset):
    name = "s3-sync"
    summary = (
        "uploads in parallel every file under path whose size or modification time differs "
        "from its object's; what is not sent within T makes the step timeout"
    )
    arguments = {"path": leaf(absolute_path), "to": leaf(s3_destination)}
    required = ("path", "to")

    def would(self, args: Mapping[str, Any], call: Call) -> str:
        bucket, prefix = args["to"]
        try:
            files = local_files(args["path"], prefix)
            size = sum(f.size for f in files)
            local = f"{len(files)} files, {size} bytes now"
        except OSError as failure:
            local = f"not readable now: {failure.strerror}"
        return (
            f"PutObject to s3://{bucket}/{prefix} each file under {args['path']} ({local}) whose "
            f"size or x-amz-meta-mtime differs (ListObjectsV2, HeadObject), {CONCURRENCY} at a "
            f"time, within {call.seconds} s"
        )

    def run(self, args: Mapping[str, Any], call: Call) -> Result:
        bucket, prefix = args["to"]
        where = f"s3://{bucket}/{prefix}"
        if not os.path.isdir(args["path"]):
            return Result(FAILED, f"{args['path']}: not a folder")
        started = time.monotonic()
        files = local_files(args["path"], prefix)
        try:
            client = _client(call.services.region())
            sync = Sync(client, bucket, prefix, call)
            changed = sync.changed(files)
        except _api_errors() as failure:
            return Result(FAILED, f"{where}: {_why(failure)}")
        if changed is None:  # the detail still says what was sent: nothing
            what = f"sent 0 files, 0 bytes to {where} (still comparing {len(files)} files)"
            return _out_of_time(call, f"{what}; {len(files)} not sent", started)
        sent = sync.upload(changed)
        took = time.monotonic() - started
        summary = (
            f"sent {sent.files} files, {sent.bytes} bytes to {where} in {took:.1f} s "
            f"({len(files) - len(changed)} of {len(files)} unchanged)"
        )
        if sent.failures:
            return Result(FAILED, f"{summary}; {len(sent.failures)} failed: {sent.failures[0]}")
        if sent.files < len(changed):
            unsent = len(changed) - sent.files
            return _out_of_time(call, f"{summary}; {unsent} not sent", started)
        return Result(OK, summary)

    def requirements(self, args: Mapping[str, Any]) -> List[Requirement]:
        return [Requirement("bucket", args["to"][0])]


PRESET = S3Sync()


def _out_of_time(call: Call, what: str, started: float) -> Result:
    if call.stopping():
        return Result(INTERRUPTED, f"{what}: stopped by the daemon's shutdown")
    return Result(TIMEOUT, f"{what} within {time.monotonic() - started:.1f} s")


@dataclass
class Sent:
    files: int = 0
    bytes: int = 0
    failures: List[str] = field(default_factory=list)


class Sync:
    """One sync's calls, each phase bounded by `call.time_left()`."""

    def __init__(self, client: Any, bucket: str, prefix: str, call: Call) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.call = call

    def changed(self, files: List[LocalFile]) -> Optional[List[LocalFile]]:
        """The files to send, in order; None when the hook's time ran out comparing."""
        sizes = self._sizes()
        if sizes is None:
            return None
        same_size = [f for f in files if sizes.get(f.key) == f.size]
        pool = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="s3-sync-head")
        try:
            asks = {f.key: pool.submit(self._mtime, f.key) for f in same_size}
            if not self._wait(list(asks.values())):
                return None
            times = {key: future.result() for key, future in asks.items()}
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # past the limit: not waited for
        return [f for f in files if sizes.get(f.key) != f.size or times.get(f.key) != f.mtime_ns]

    def upload(self, files: List[LocalFile]) -> Sent:
        from boto3.s3.transfer import TransferConfig, create_transfer_manager
        from s3transfer.subscribers import BaseSubscriber

        sent = Sent()
        lock = threading.Lock()

        class Progress(BaseSubscriber):
            def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
                with lock:
                    sent.bytes += bytes_transferred

        config = TransferConfig(max_concurrency=CONCURRENCY, use_threads=True)
        manager = create_transfer_manager(self.client, config)
        futures = [
            manager.upload(
                f.path,
                self.bucket,
                f.key,
                extra_args={"Metadata": {MTIME_KEY: mtime_text(f.mtime_ns)}},
                subscribers=[Progress()],
            )
            for f in files
        ]
        pending = list(futures)
        while pending and self.call.time_left() > 0 and not self.call.stopping():
            time.sleep(min(WAIT_SLICE, max(0.01, self.call.time_left())))
            pending = [f for f in pending if not f.done()]
        for future in pending:
            future.cancel()
        for file, future in zip(files, futures):
            if future in pending:
                continue
            failure = _failure_of(future)
            if failure:
                sent.failures.append(f"{file.key}: {failure}")
            else:
                sent.files += 1
        # Cancelled transfers end on their own; the step does not wait for them.
        threading.Thread(target=manager.shutdown, name="s3-sync-end", daemon=True).start()
        return sent

    def _sizes(self) -> Optional[Dict[str, int]]:
        sizes: Dict[str, int] = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            for item in page.get("Contents", []):
                sizes[item["Key"]] = int(item["Size"])
            if self.call.time_left() <= 0 or self.call.stopping():
                return None
        return sizes

    def _mtime(self, key: str) -> Optional[int]:
        """The object's kept modification time; None when it has none, or is gone since it
        was listed (either way the file is sent)."""
        from botocore.exceptions import ClientError

        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as failure:
            if failure.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return None
            raise
        return mtime_ns_of((answer.get("Metadata") or {}).get(MTIME_KEY))

    def _wait(self, futures: List[Future[Any]]) -> bool:
        pending = set(futures)
        while pending:
            left = self.call.time_left()
            if left <= 0 or self.call.stopping():
                return False
            _, pending = wait(pending, timeout=min(WAIT_SLICE, left), return_when=FIRST_COMPLETED)
        return True


def _failure_of(future: Any) -> str:
    try:
        future.result()
    except Exception as failure:
        return _why(failure)
    return ""


def _client(region: Optional[str]) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.session.Session().client(
        "s3",
        region_name=region,
        endpoint_url=endpoint or None,
        config=BotoConfig(
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            max_pool_connections=CONCURRENCY,
        ),
    )


def _api_errors() -> Tuple[Type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, OSError)


def _why(failure: BaseException) -> str:
    response = getattr(failure, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        return f"{error.get('Code') or 'Error'}: {error.get('Message') or failure}"
    return f"{type(failure).__name__}: {failure}"
