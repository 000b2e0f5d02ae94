"""The `s3-sync` preset against moto's S3 over HTTP with boto3: the first run sends every
file (its modification time in the object's metadata), a second run sends only what changed
by size or modification time, what is not sent within T makes the step `timeout` (and the
step ends on time), symlinks are not followed, and failures say why."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest
from preset_support import INSTANCE_ID, context, preset_hook, run_step

from spotwatch.presets.s3_sync import mtime_ns_of

BUCKET = "checkpoints"


def tree(folder: Path, files: Dict[str, bytes]) -> None:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def objects(s3: Any, prefix: str = "") -> Dict[str, Dict[str, Any]]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {item["Key"]: item for item in listed}


@pytest.fixture
def bucket(s3: Any) -> Any:
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return s3


def sync(folder: Path, to: str = f"s3://{BUCKET}/run/", **fields: Any) -> Any:
    hook = preset_hook("s3-sync", {"path": str(folder), "to": to}, **fields)
    return run_step(hook, context(60))


def test_the_first_run_sends_everything_and_keeps_each_files_time(
    tmp_path: Path, bucket: Any
) -> None:
    ckpt = tmp_path / "ckpt"
    tree(ckpt, {"a.bin": b"a" * 1000, "sub/b.bin": b"b" * 2000, "sub/deeper/c": b""})
    outcome = sync(ckpt, f"s3://{BUCKET}/run/${{instance_id}}")
    assert outcome.status == "ok", outcome.detail
    assert outcome.detail.startswith(
        f"sent 3 files, 3000 bytes to s3://{BUCKET}/run/{INSTANCE_ID}/ in "
    )
    assert outcome.detail.endswith("(0 of 3 unchanged)")
    found = objects(bucket)
    keys = [f"run/{INSTANCE_ID}/{name}" for name in ("a.bin", "sub/b.bin", "sub/deeper/c")]
    assert sorted(found) == keys
    head = bucket.head_object(Bucket=BUCKET, Key=keys[1])
    assert mtime_ns_of(head["Metadata"]["mtime"]) == (ckpt / "sub/b.bin").stat().st_mtime_ns


def test_a_second_run_sends_only_what_changed_by_size_or_time(
    tmp_path: Path, bucket: Any
) -> None:
    """Unchanged files are not sent again (their objects keep their ETag and time); a file
    with new contents of the same size but a new time, one that grew, one whose time alone
    moved back, and a new one are."""
    ckpt = tmp_path / "ckpt"
    tree(ckpt, {f"keep{i}": bytes([i]) * 100 for i in range(5)})
    tree(ckpt, {"same-size": b"x" * 50, "grows": b"g", "old-time": b"t" * 10})
    assert sync(ckpt).status == "ok"
    before = objects(bucket)
    time.sleep(1.1)  # LastModified has whole seconds
    (ckpt / "same-size").write_bytes(b"y" * 50)
    (ckpt / "grows").write_bytes(b"gg")
    stamp = (ckpt / "old-time").stat()
    os.utime(ckpt / "old-time", ns=(stamp.st_atime_ns, stamp.st_mtime_ns - 3_000_000_000))
    tree(ckpt, {"new": b"n" * 7})
    outcome = sync(ckpt)
    assert outcome.status == "ok", outcome.detail
    assert outcome.detail.startswith(f"sent 4 files, 69 bytes to s3://{BUCKET}/run/ in ")
    assert outcome.detail.endswith("(5 of 9 unchanged)")
    after = objects(bucket)
    for i in range(5):
        key = f"run/keep{i}"
        assert after[key]["LastModified"] == before[key]["LastModified"]
        assert after[key]["ETag"] == before[key]["ETag"]
    assert bucket.get_object(Bucket=BUCKET, Key="run/same-size")["Body"].read() == b"y" * 50
    assert sync(ckpt).detail.startswith("sent 0 files, 0 bytes")


def test_symlinks_are_not_followed(tmp_path: Path, bucket: Any) -> None:
    """A link in the folder to a file outside it is not sent (root reads what whoever
    writes the folder links to), nor a linked folder."""
    secret = tmp_path / "secret"
    secret.write_text("root only")
    ckpt = tmp_path / "ckpt"
    tree(ckpt, {"ok": b"1"})
    (ckpt / "leak").symlink_to(secret)
    (ckpt / "dir").symlink_to(tmp_path, target_is_directory=True)
    assert sync(ckpt).status == "ok"
    assert sorted(objects(bucket)) == ["run/ok"]


def test_a_missing_bucket_fails_saying_so(tmp_path: Path, s3: Any) -> None:
    tree(tmp_path / "ckpt", {"a": b"1"})
    outcome = sync(tmp_path / "ckpt")
    assert outcome.status == "failed" and "NoSuchBucket" in outcome.detail


def test_a_missing_folder_fails_naming_it(tmp_path: Path, bucket: Any) -> None:
    outcome = sync(tmp_path / "nothing")
    assert outcome.status == "failed" and outcome.detail.endswith("nothing: not a folder")


def test_dry_run_says_what_it_would_send_and_sends_nothing(tmp_path: Path, bucket: Any) -> None:
    tree(tmp_path / "ckpt", {"a": b"12345", "b/c": b"678"})
    hook = preset_hook("s3-sync", {"path": str(tmp_path / "ckpt"), "to": f"s3://{BUCKET}/x"})
    outcome = run_step(hook, context(60, dry_run=True))
    assert outcome.detail.startswith(
        f"would PutObject to s3://{BUCKET}/x/ each file under {tmp_path / 'ckpt'} "
        "(2 files, 8 bytes now) whose size or x-amz-meta-mtime differs"
    )
    assert objects(bucket) == {}


class SlowLink:
    """A TCP relay to moto that lets through at most `rate` bytes a second towards it, all
    connections together, so uploads take as long as a slow network would make them."""

    def __init__(self, target: str, rate: int) -> None:
        host, port = target.rsplit("//", 1)[1].split(":")
        self.target = (host, int(port))
        self.rate = rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.closing = threading.Event()
        self.lock = threading.Lock()
        self.free_at = time.monotonic()  # when the link can take the next byte
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, slow: bool) -> None:
        try:
            while not self.closing.is_set():
                data = source.recv(16384 if not slow else max(1, self.rate // 20))
                if not data:
                    break
                if slow:
                    with self.lock:
                        self.free_at = max(self.free_at, time.monotonic()) + len(data) / self.rate
                        until = self.free_at
                    time.sleep(max(0.0, until - time.monotonic()))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()

    def close(self) -> None:
        self.closing.set()
        self.listener.close()


@pytest.fixture
def slow_link(moto_url: str, bucket: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowLink]:
    link = SlowLink(moto_url, rate=2_000_000)
    monkeypatch.setenv("AWS_ENDPOINT_URL", link.url)
    yield link
    link.close()


def test_what_is_not_sent_within_t_makes_the_step_timeout_on_time(
    tmp_path: Path, slow_link: SlowLink, bucket: Any
) -> None:
    """12 MB through a 2 MB/s link in a T of 3 s: what is sent in time is (none, when making
    the client and listing took T on a loaded host), the rest is not; the step is `timeout`,
    saying how many files and bytes went, and ends at T, not when the uploads would have."""
    tree(tmp_path / "ckpt", {f"part{i:02d}": os.urandom(1_000_000) for i in range(12)})
    started = time.monotonic()
    outcome = sync(tmp_path / "ckpt", timeout=3)
    took = time.monotonic() - started
    assert outcome.status == "timeout", outcome.detail
    assert 2.9 <= took < 4.5, took
    sent = int(outcome.detail.split("sent ", 1)[1].split(" files", 1)[0])
    assert 0 <= sent < 12
    assert f"; {12 - sent} not sent within" in outcome.detail
