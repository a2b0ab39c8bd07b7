"""The zarr ReplayBuffer of diffusion_policy plus a task and instruction per episode.

Layout (zarr format 2, like diffusion_policy's ReplayBuffer):

    data/<key>                 [n_steps, ...] every episode concatenated on axis 0
    meta/episode_ends          [n_episodes] int64, cumulative end step of each episode
    meta/episode_task          [n_episodes] str, task name ("reach_red")
    meta/episode_instruction   [n_episodes] str, language instruction ("reach the red square")

The root group's `lbm_replay_buffer` attribute is written first as incomplete and marked complete last.
A buffer that diffusion_policy's own ReplayBuffer wrote (no such attribute, no task or instruction per
episode; zarr format 2 or 3; a directory, or a local zip file `*.zarr.zip` as `zarr.ZipStore` writes it)
is read unchanged. Paths are local paths or fsspec URLs (file://, s3://, ...). Buffers are written as
directories.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import fsspec.implementations.zip
import numcodecs
import numpy as np
import zarr
import zarr.storage

from lbm.errors import LbmError

COMPLETION_ATTR = "lbm_replay_buffer"
FORMAT_VERSION = 1
DEFAULT_CACHE_BYTES = 64 * 2**20


def local_path(url: str) -> Path | None:
    """The filesystem path of a local path or file:// URL; None for other URLs."""
    if url.startswith("file://"):
        return Path(url.removeprefix("file://"))
    if "://" in url:
        return None
    return Path(url).expanduser().absolute()


def is_zip(url: str) -> bool:
    """Whether `url` names a zip file of a store (`*.zarr.zip`) rather than a directory."""
    return url.rstrip("/").lower().endswith(".zip")


class MissingReplayBuffer(LbmError):
    """Nothing is stored at the replay buffer's URL."""

    def __init__(self, url: str):
        super().__init__(
            f"no replay buffer at {url}: check the path (`lbm data synth` and `lbm data metaworld` make one)"
        )
        self.url = url


class ChunkCache:
    """Least-recently-used decoded chunks, keyed by (array key, chunk index), at most `max_bytes` in all."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._chunks: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._chunks)

    def get(self, key: tuple[str, int]) -> np.ndarray | None:
        chunk = self._chunks.get(key)
        if chunk is not None:
            self._chunks.move_to_end(key)
        return chunk

    def put(self, key: tuple[str, int], chunk: np.ndarray) -> None:
        if chunk.nbytes > self.max_bytes or key in self._chunks:
            return
        self._chunks[key] = chunk
        self.nbytes += chunk.nbytes
        while self.nbytes > self.max_bytes:
            _, evicted = self._chunks.popitem(last=False)
            self.nbytes -= evicted.nbytes


@dataclass(frozen=True)
class _ChunkLayout:
    """How one array is split into chunk objects along axis 0, and how to decode one.

    Plain numeric zarr format 2 arrays with one chunk across the other axes (what our writer and
    diffusion_policy's usually write) are read straight from storage and decoded here (`direct`); any
    other array (zarr format 3, F order, chunked across other axes) is read through zarr, chunk by chunk.
    """

    path: str
    length: int
    chunk_steps: int
    chunk_shape: tuple[int, ...]
    dtype: np.dtype
    fill_value: Any
    compressor: Any
    filters: tuple[Any, ...]
    separator: str
    direct: bool

    @classmethod
    def of(cls, array: zarr.Array, path: str) -> _ChunkLayout:
        meta = array.metadata
        if array.dtype.kind not in "biuf":
            raise LbmError(f"array {path} holds {array.dtype} values; a replay buffer holds numbers")
        direct = (
            meta.zarr_format == 2
            and meta.order == "C"
            and tuple(array.chunks[1:]) == tuple(array.shape[1:])
            and (meta.compressor is None or isinstance(meta.compressor, numcodecs.abc.Codec))
        )
        return cls(
            path=path,
            length=array.shape[0],
            chunk_steps=array.chunks[0],
            chunk_shape=(array.chunks[0], *array.shape[1:]),
            dtype=np.dtype(array.dtype),
            fill_value=array.fill_value,
            compressor=meta.compressor if direct else None,
            filters=tuple(meta.filters or ()) if direct else (),
            separator=meta.dimension_separator if direct else "/",
            direct=direct,
        )

    @property
    def n_chunks(self) -> int:
        return -(-self.length // self.chunk_steps)

    def chunk_path(self, index: int) -> str:
        return self.separator.join([f"{self.path}/{index}"] + ["0"] * (len(self.chunk_shape) - 1))

    def decode(self, raw: bytes | None) -> np.ndarray:
        """One chunk [chunk_steps, ...] from its stored bytes (None: never written, all fill value)."""
        if raw is None:
            return np.full(self.chunk_shape, self.fill_value, dtype=self.dtype)
        buf = self.compressor.decode(raw) if self.compressor is not None else raw
        for codec in reversed(self.filters):
            buf = codec.decode(buf)
        return np.frombuffer(buf, dtype=self.dtype).reshape(self.chunk_shape)


class ReplayBuffer:
    """Read-only view of a replay buffer: episode metadata in memory, data read chunk by chunk on demand.

    Chunks are fetched straight from storage (concurrently for remote URLs) and kept in a bounded LRU
    (`cache_bytes`), so memory does not grow with the dataset.
    """

    def __init__(
        self, url: str, group: zarr.Group, fs: fsspec.AbstractFileSystem, root: str, cache_bytes: int
    ):
        self.url = url
        self._group = group
        self._fs = fs
        meta = group["meta"]
        self.episode_ends: np.ndarray = np.asarray(meta["episode_ends"][:], dtype=np.int64)
        self.n_episodes = len(self.episode_ends)
        self.n_steps = int(self.episode_ends[-1]) if self.n_episodes else 0
        if self.n_episodes and (self.episode_ends[0] < 0 or np.any(np.diff(self.episode_ends) < 0)):
            raise LbmError(f"{url} is corrupt: meta/episode_ends is not a non-decreasing list of step counts")
        # None where the buffer stores none (diffusion_policy's): the task config names them.
        self.episode_tasks: list[str] | None = _strings(meta, "episode_task", self.n_episodes, url)
        self.episode_instructions: list[str] | None = _strings(
            meta, "episode_instruction", self.n_episodes, url
        )
        data = group["data"]
        self._layouts = {
            key: _ChunkLayout.of(data[key], posixpath.join(root, "data", key)) for key in data.array_keys()
        }
        for key, layout in self._layouts.items():
            if layout.length != self.n_steps:
                raise LbmError(
                    f"{url} is corrupt: data/{key} has {layout.length} steps, episodes end at {self.n_steps}"
                )
        self.cache = ChunkCache(cache_bytes)

    @classmethod
    def open(
        cls, url: str, storage_options: dict | None = None, *, cache_bytes: int = DEFAULT_CACHE_BYTES
    ) -> ReplayBuffer:
        """Open the replay buffer at `url`; LbmError when there is none or it is incomplete."""
        try:
            store, fs, root = _read_only_store(url, storage_options)
            group = zarr.open_group(store, mode="r")
        except zarr.errors.NodeNotFoundError:
            if is_zip(url):
                raise LbmError(
                    f"{url} holds no zarr store at its root; zip a store's contents, not its folder "
                    "(cd NAME.zarr && zip -r -0 ../NAME.zarr.zip .)"
                ) from None
            raise MissingReplayBuffer(url) from None
        except FileNotFoundError:
            raise MissingReplayBuffer(url) from None
        except PermissionError as error:
            raise LbmError(
                f"cannot read {url} ({error}); check its permissions or your credentials"
            ) from None
        except zipfile.BadZipFile as error:
            raise LbmError(f"{url} is not a zip file of a zarr store ({error})") from None
        marker = group.attrs.get(COMPLETION_ATTR)
        if marker is not None and not (isinstance(marker, Mapping) and marker.get("complete")):
            raise LbmError(
                f"{url} is not a complete lbm replay buffer (its `{COMPLETION_ATTR}` completion mark says "
                "incomplete: its writing was interrupted); write it again with the command that made it "
                "and --force"
            )
        if not _has_replay_layout(group):
            raise LbmError(
                f"{url} is not a replay buffer: it needs a data/ group of arrays and meta/episode_ends "
                "(the layout of diffusion_policy's ReplayBuffer)"
            )
        return cls(url, group, fs, root.rstrip("/"), cache_bytes)

    def keys(self) -> list[str]:
        return sorted(self._layouts)

    def __contains__(self, key: str) -> bool:
        return key in self._layouts

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __getitem__(self, key: str) -> zarr.Array:
        """The lazy zarr array data/<key> [n_steps, ...]."""
        return self._group["data"][key]

    def episode_slice(self, i: int) -> slice:
        start = int(self.episode_ends[i - 1]) if i > 0 else 0
        return slice(start, int(self.episode_ends[i]))

    @property
    def episode_starts(self) -> np.ndarray:
        """[n_episodes] int64 first step of each episode."""
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    def read_steps(self, key: str, steps: np.ndarray) -> np.ndarray:
        """data/<key> at the given step indices [N] (any order, repeats allowed) -> [N, ...].

        Reads only the chunks holding those steps, through the LRU cache, fetching missing ones together.
        """
        layout = self._layouts[key]
        steps = np.asarray(steps, dtype=np.int64)
        chunk_ids = steps // layout.chunk_steps
        wanted = np.unique(chunk_ids).tolist()
        chunks = {c: self.cache.get((key, c)) for c in wanted}
        missing = [c for c, chunk in chunks.items() if chunk is None]
        for c, chunk in self._fetch(key, missing).items():
            chunks[c] = chunk
            self.cache.put((key, c), chunk)
        out = np.empty((len(steps), *layout.chunk_shape[1:]), dtype=layout.dtype)
        for c, chunk in chunks.items():
            rows = chunk_ids == c
            out[rows] = chunk[steps[rows] - c * layout.chunk_steps]
        return out

    def iter_chunks(self, key: str) -> Iterator[tuple[int, np.ndarray]]:
        """(first step, rows [<= chunk_steps, ...]) for each chunk of data/<key> in order, not cached."""
        layout = self._layouts[key]
        for c in range(layout.n_chunks):
            first = c * layout.chunk_steps
            yield first, self._fetch(key, [c])[c][: layout.length - first]

    def _fetch(self, key: str, chunk_ids: list[int]) -> dict[int, np.ndarray]:
        if not chunk_ids:
            return {}
        layout = self._layouts[key]
        if not layout.direct:
            array, steps = self[key], layout.chunk_steps
            return {c: array[c * steps : (c + 1) * steps] for c in chunk_ids}
        paths = {c: layout.chunk_path(c) for c in chunk_ids}
        raw = self._fs.cat(list(paths.values()), on_error="omit")
        return {c: layout.decode(raw.get(path)) for c, path in paths.items()}


def _read_only_store(
    url: str, storage_options: dict | None
) -> tuple[zarr.abc.store.Store, fsspec.AbstractFileSystem, str]:
    """(zarr store, file system, root path in it) of the buffer at `url`, read-only.

    A zip file (local only) is opened afresh on every call, so each DataLoader worker reads through its own
    file handles.
    """
    path = local_path(url)
    if is_zip(url):
        if path is None:
            raise LbmError(
                f"{url} is a zip file in remote storage, and zarr reads zip stores from local files only: "
                "copy it to a local path, or unzip it and upload the directory (a .zarr store)"
            )
        # Chunks are read through fsspec's view of the same zip file.
        zip_fs = fsspec.implementations.zip.ZipFileSystem(fo=str(path))
        return zarr.storage.ZipStore(path, mode="r"), zip_fs, ""
    if path is not None:
        return zarr.storage.LocalStore(path, read_only=True), fsspec.filesystem("file"), str(path)
    store = zarr.storage.FsspecStore.from_url(url, storage_options=storage_options, read_only=True)
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return store, fs, root


def _has_replay_layout(group: zarr.Group) -> bool:
    """Whether `group` holds a data/ group and meta/episode_ends, as every replay buffer does."""
    try:
        return isinstance(group["data"], zarr.Group) and isinstance(group["meta/episode_ends"], zarr.Array)
    except KeyError:
        return False


def _strings(meta: zarr.Group, key: str, n_episodes: int, url: str) -> list[str] | None:
    """meta/<key> as one string per episode; None when the buffer has no such array."""
    if key not in meta:
        return None
    values = [str(v) for v in meta[key][:].tolist()]
    if len(values) != n_episodes:
        raise LbmError(f"{url} is corrupt: meta/{key} has {len(values)} entries for {n_episodes} episodes")
    return values


class ReplayBufferWriter:
    """Writes a replay buffer episode by episode; complete only after `close()` (or leaving the `with`).

    Local paths are written to a hidden sibling folder and renamed into place on close; remote URLs get
    the completion mark last. Arrays of 2-D or larger values per step (images) are chunked every
    `chunk_steps` steps, so a sample reads one or two chunks; vectors per step (states, actions) every
    `low_dim_chunk_steps`.
    """

    def __init__(
        self,
        url: str,
        *,
        chunk_steps: int = 4,
        low_dim_chunk_steps: int = 4096,
        storage_options: dict | None = None,
        overwrite: bool = False,
    ):
        if chunk_steps < 1 or low_dim_chunk_steps < 1:
            raise LbmError(
                f"chunk_steps and low_dim_chunk_steps must be >= 1, got {chunk_steps}, {low_dim_chunk_steps}"
            )
        if is_zip(url):
            raise LbmError(
                f"{url} names a zip file; lbm writes replay buffers as directories (.zarr) and reads both"
            )
        self.url = url
        self.chunk_steps = chunk_steps
        self.low_dim_chunk_steps = low_dim_chunk_steps
        self._overwrite = overwrite
        self._final_path = local_path(url)
        if self._final_path is not None:
            if self._final_path.exists() and not overwrite:
                raise LbmError(f"{url} already exists; choose another path or replace it (--force)")
            self._final_path.parent.mkdir(parents=True, exist_ok=True)
            self._write_path: Path | None = self._final_path.with_name(
                f".{self._final_path.name}.partial-{uuid.uuid4().hex[:8]}"
            )
            store = zarr.storage.LocalStore(self._write_path)
        else:
            self._write_path = None
            # a fresh filesystem instance: no listing cached before someone else wrote there
            self._fs, self._root = fsspec.core.url_to_fs(
                url, skip_instance_cache=True, **(storage_options or {})
            )
            if self._fs.exists(self._root):
                if not overwrite:
                    raise LbmError(f"{url} already exists; choose another path or replace it (--force)")
                self._fs.rm(self._root, recursive=True)
            store = zarr.storage.FsspecStore.from_url(url, storage_options=storage_options, read_only=False)
        self._group = zarr.open_group(
            store,
            mode="w",
            zarr_format=2,
            attributes={COMPLETION_ATTR: {"version": FORMAT_VERSION, "complete": False}},
        )
        self._data = self._group.create_group("data")
        self._arrays: dict[str, zarr.Array] = {}
        self._pending: dict[str, list[np.ndarray]] = {}
        self._episode_ends: list[int] = []
        self._tasks: list[str] = []
        self._instructions: list[str] = []

    def __enter__(self) -> ReplayBufferWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def n_steps(self) -> int:
        return self._episode_ends[-1] if self._episode_ends else 0

    def add_episode(self, data: Mapping[str, np.ndarray], task: str, instruction: str) -> None:
        """Append one episode: `data[key]` [T, ...], one T for all keys, the same keys every episode."""
        arrays = {key: np.asarray(value) for key, value in data.items()}
        lengths = {a.shape[0] if a.ndim else 0 for a in arrays.values()}
        if not arrays or len(lengths) != 1 or 0 in lengths:
            shapes = {key: a.shape for key, a in arrays.items()}
            raise LbmError(
                f"an episode needs arrays of equal, non-zero length on axis 0, got shapes {shapes}"
            )
        if not task:
            raise LbmError("an episode needs a non-empty task name")
        if not self._episode_ends:
            for key, a in arrays.items():
                self._create_array(key, a)
        elif set(arrays) != set(self._arrays):
            raise LbmError(
                f"episode keys {sorted(arrays)} differ from the first episode's {sorted(self._arrays)}"
            )
        for key, a in arrays.items():
            target = self._arrays[key]
            if a.shape[1:] != target.shape[1:] or not np.can_cast(a.dtype, target.dtype, "same_kind"):
                raise LbmError(
                    f"episode data[{key!r}] is {a.dtype} {a.shape[1:]} per step, "
                    f"the first episode's was {target.dtype} {target.shape[1:]}"
                )
            self._pending[key].append(a.astype(target.dtype, copy=False))
            self._flush(key, final=False)
        self._episode_ends.append(self.n_steps + lengths.pop())
        self._tasks.append(str(task))
        self._instructions.append(str(instruction))

    def close(self) -> None:
        """Write what is pending and the episode metadata, then mark the buffer complete."""
        for key in self._arrays:
            self._flush(key, final=True)
        meta = self._group.create_group("meta")
        n = len(self._episode_ends)
        ends = meta.create_array("episode_ends", shape=(n,), chunks=(max(n, 1),), dtype=np.int64)
        tasks = meta.create_array("episode_task", shape=(n,), chunks=(max(n, 1),), dtype=str)
        instructions = meta.create_array("episode_instruction", shape=(n,), chunks=(max(n, 1),), dtype=str)
        if n:
            ends[:] = np.asarray(self._episode_ends, dtype=np.int64)
            tasks[:] = np.asarray(self._tasks)
            instructions[:] = np.asarray(self._instructions)
        self._group.attrs.update({COMPLETION_ATTR: {"version": FORMAT_VERSION, "complete": True}})
        if self._write_path is not None:
            self._move_into_place()

    def abort(self) -> None:
        """Remove what was written."""
        if self._write_path is not None:
            shutil.rmtree(self._write_path, ignore_errors=True)
        elif self._fs.exists(self._root):
            self._fs.rm(self._root, recursive=True)

    def _create_array(self, key: str, first: np.ndarray) -> None:
        steps = self.chunk_steps if first.ndim >= 3 else self.low_dim_chunk_steps
        self._arrays[key] = self._data.create_array(
            key,
            shape=(0, *first.shape[1:]),
            chunks=(steps, *first.shape[1:]),
            dtype=first.dtype,
            compressors=numcodecs.Zstd(level=3),
        )
        self._pending[key] = []

    def _flush(self, key: str, *, final: bool) -> None:
        """Write pending rows of `key` in whole chunks (and the rest when `final`)."""
        pending = self._pending[key]
        if not pending:
            return
        array = self._arrays[key]
        rows = np.concatenate(pending) if len(pending) > 1 else pending[0]
        n = len(rows) if final else len(rows) // array.chunks[0] * array.chunks[0]
        if n == 0:
            return
        start = array.shape[0]
        array.resize((start + n, *array.shape[1:]))
        array[start : start + n] = rows[:n]
        self._pending[key] = [rows[n:]] if n < len(rows) else []

    def _move_into_place(self) -> None:
        assert self._final_path is not None and self._write_path is not None
        replaced = None
        if self._final_path.exists():
            if not self._overwrite:
                shutil.rmtree(self._write_path)
                raise LbmError(
                    f"{self.url} was created by another writer while this one was writing; kept that one"
                )
            replaced = self._final_path.with_name(f".{self._final_path.name}.replaced-{uuid.uuid4().hex[:8]}")
            os.replace(self._final_path, replaced)
        os.replace(self._write_path, self._final_path)
        if replaced is not None:
            shutil.rmtree(replaced)
