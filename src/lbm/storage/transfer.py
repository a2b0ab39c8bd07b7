"""Copy files to and from artifact URLs (file://, s3://, any fsspec URL), verified and never partial.

A reader never sees a partial object under its final name: local files are written under a temporary name
and renamed; object stores (S3) only show an object once its upload has completed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import uuid
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

log = logging.getLogger(__name__)


class TransferError(RuntimeError):
    """An upload or download did not produce the expected bytes."""


def join(url: str, *parts: str) -> str:
    """`url` with path parts appended."""
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


def upload_verified(local_path: str | os.PathLike, url: str) -> None:
    """Copy a local file to `url` and check the stored size matches."""
    fs, path = fsspec.core.url_to_fs(url)
    size = os.path.getsize(local_path)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        partial = f"{path}.partial-{uuid.uuid4().hex}"
        fs.put_file(os.fspath(local_path), partial)
        os.replace(partial, path)
    else:
        fs.put_file(os.fspath(local_path), path)
        fs.invalidate_cache(parent)
    stored = fs.info(path)["size"]
    if stored != size:
        raise TransferError(f"uploaded {url} has {stored} bytes, expected {size}")


def write_new(url: str, data: bytes) -> bool:
    """Write `data` to `url` unless something is there already; False (and nothing written) when it is.

    Local files are linked into place from a complete temporary file, so two writers cannot both win and no
    reader sees a partial file; on an object store the check and the write are two requests.
    """
    fs, path = fsspec.core.url_to_fs(url)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if isinstance(fs, LocalFileSystem):
        partial = f"{path}.partial-{uuid.uuid4().hex}"
        Path(partial).write_bytes(data)
        try:
            os.link(partial, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(partial)
        return True
    if fs.exists(path):
        return False
    fs.pipe_file(path, data)
    fs.invalidate_cache(parent)
    return True


def download(url: str, local_path: str | os.PathLike) -> Path:
    """Copy `url` to a local file, atomically."""
    fs, path = fsspec.core.url_to_fs(url)
    local_path = Path(local_path)
    local_path.parent.mkdir(parents=True, exist_ok=True)
    partial = local_path.with_name(f"{local_path.name}.partial-{uuid.uuid4().hex}")
    fs.get_file(path, os.fspath(partial))
    os.replace(partial, local_path)
    return local_path


def list_names(url: str) -> list[str]:
    """Names of the files directly under `url` (empty when it does not exist)."""
    fs, path = fsspec.core.url_to_fs(url)
    try:
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
    except FileNotFoundError:
        return []


def remove(url: str) -> None:
    """Delete `url` if it exists."""
    fs, path = fsspec.core.url_to_fs(url)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)


class BackgroundUploader:
    """Uploads and deletions run in order on one thread, so training never waits on storage.

    Failures are logged and counted, not raised: a storage hiccup must not stop a training run.
    """

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.failures = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="artifact-uploader", daemon=True)
        self._thread.start()

    def upload(self, local_path: str | os.PathLike, name: str | None = None) -> None:
        """Queue a copy of `local_path` to `<base_url>/<name>` (default: the file's name)."""
        self._queue.put(("upload", Path(local_path), name or Path(local_path).name))

    def delete(self, name: str) -> None:
        """Queue the removal of `<base_url>/<name>`."""
        self._queue.put(("delete", None, name))

    def flush(self) -> None:
        """Wait until everything queued so far is done."""
        self._queue.join()

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            action, local_path, name = item
            url = join(self.base_url, name)
            try:
                if action == "upload":
                    upload_verified(local_path, url)
                else:
                    remove(url)
            except Exception as error:  # noqa: BLE001 - storage errors must not end training
                self.failures += 1
                log.warning("artifact %s of %s failed: %s", action, url, error)
            finally:
                self._queue.task_done()
        self._queue.task_done()
