"""Artifact roots on object stores (s3://, gs://, file://, ... through pyarrow.fs), kept in a local mirror.

The stages read and write plain local files. A plain path root is used as it is: nothing is copied. For a URI
root (anything `pyarrow.fs.FileSystem.from_uri` accepts, e.g. `s3://bucket/run?endpoint_override=host:9000&
scheme=http`) the stages work in a local mirror of the root, one per root and machine
($RDISTILL_CACHE_DIR/roots/<name>, else ~/.cache/rdistill/roots/<name>), and move whole sub-paths: a stage pulls
the folders it reads before it starts and pushes the folder it wrote when it has finished.

A pushed folder never looks complete before it is: its marker (the stage's manifest.json, which readers need
before they trust a folder) is deleted from the remote first and uploaded last, so a reader sees the old
folder, no folder, or the whole new one. A pull treats a remote folder without its marker as absent. Single
files are replaced whole: object stores publish an object only once it is complete; other filesystems get it
under a temporary name first, then moved into place.

This is the only module that imports pyarrow.fs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rdistill.errors import ArtifactError, ConfigError
from rdistill.layout import MANIFEST

CACHE_DIR_ENV = "RDISTILL_CACHE_DIR"
# a PUT is atomic there, and a move is a server-side copy (limited to 5 GB on S3): no temporary names needed
_ATOMIC_OBJECT_STORES = {"s3", "gcs", "abfs"}
_CREDENTIALS_HINT = ("check the bucket exists, the endpoint is reachable and credentials are set the usual way "
                     "(s3://: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role; gs://: "
                     "GOOGLE_APPLICATION_CREDENTIALS or the metadata server)")


def is_uri(root: str) -> bool:
    return "://" in str(root)


def display(root: str) -> str:
    """The root as it may appear in messages and logs: user:secret@ in a URI is hidden."""
    return re.sub(r"://[^/@?]*@", "://***@", str(root))


def check_root_form(root: str) -> None:
    """A cheap, offline check at config time; the filesystem itself is opened (and probed) on first use."""
    if is_uri(root) and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://.", root):
        raise ValueError(f"{display(root)!r} is neither a local path nor a URI like s3://bucket/prefix")


def mirror_dir(root: str) -> Path:
    """Where this machine keeps its copy of a URI root: a readable name plus a hash of the whole URI."""
    base = os.environ.get(CACHE_DIR_ENV)
    base_dir = Path(base).expanduser() if base else Path.home() / ".cache" / "rdistill"
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", display(root).split("?")[0].replace("***@", "")).strip("-.")
    return base_dir / "roots" / f"{readable[:60]}-{hashlib.sha256(root.encode()).hexdigest()[:10]}"


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and ".tmp-" in name


def _temporary_name(name: str) -> str:
    return f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ArtifactRoot:
    """One artifact root: `local` is where the stages read and write; `remote` (a path on `filesystem`) is set
    only for a URI root, whose `local` is then this machine's mirror of it."""

    root: str
    local: Path
    remote: str | None = None
    filesystem: Any = None  # a pyarrow.fs.FileSystem for a URI root

    @property
    def is_remote(self) -> bool:
        return self.remote is not None

    def relative(self, path: str | Path) -> str | None:
        """`path` as a sub-path of the root: relative paths are taken as they are, absolute ones must lie in
        `local` (None when they do not)."""
        path = Path(path)
        if not path.is_absolute():
            return path.as_posix()
        with contextlib.suppress(ValueError):
            return path.resolve().relative_to(self.local.resolve()).as_posix()
        return None

    def _remote_path(self, relative: str) -> str:
        return f"{self.remote.rstrip('/')}/{relative}" if relative not in ("", ".") else self.remote

    def describe(self, relative: str) -> str:
        """Where `relative` lives, for messages and lineage records: the URI or the local path."""
        if not self.is_remote:
            return str(self.local / relative)
        base, _, query = display(self.root).partition("?")
        return f"{base.rstrip('/')}/{relative}" + (f"?{query}" if query else "")

    def location(self, relative: str) -> tuple[str, Any]:
        """(path, filesystem) for Ray Data reads and Ray Train/Tune storage: the remote path and its pyarrow
        filesystem for a URI root, so every node reaches it; the absolute local path and None otherwise."""
        if self.is_remote:
            return self._remote_path(relative), self.filesystem
        return str((self.local / relative).resolve()), None

    # -------------------------------------------------------------------------------- reading without pulling

    def read_bytes(self, relative: str) -> bytes | None:
        """A small file's content (manifests, state), straight from where the root lives; None when absent."""
        if not self.is_remote:
            path = self.local / relative
            return path.read_bytes() if path.is_file() else None
        import pyarrow.fs as pafs

        remote = self._remote_path(relative)
        with self._errors(f"reading {relative}"):
            if self.filesystem.get_file_info(remote).type != pafs.FileType.File:
                return None
            with self.filesystem.open_input_stream(remote) as stream:
                return stream.read()

    def exists(self, relative: str) -> bool:
        if not self.is_remote:
            return (self.local / relative).exists()
        import pyarrow.fs as pafs

        with self._errors(f"looking for {relative}"):
            return self.filesystem.get_file_info(self._remote_path(relative)).type != pafs.FileType.NotFound

    def list_dirs(self, relative: str) -> list[str]:
        """Names of the sub-folders of `relative` where the root lives (e.g. students/*)."""
        if not self.is_remote:
            folder = self.local / relative
            return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        import pyarrow.fs as pafs

        with self._errors(f"listing {relative}"):
            infos = self.filesystem.get_file_info(pafs.FileSelector(self._remote_path(relative),
                                                                     allow_not_found=True))
        return sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write one small file where the root lives (the mirror copy too)."""
        from rdistill.artifacts import atomic_write_bytes

        atomic_write_bytes(self.local / relative, data)
        self.push(relative)

    def delete(self, relative: str) -> None:
        """Remove a file or folder from the root (and from the mirror)."""
        local = self.local / relative
        if local.is_dir():
            shutil.rmtree(local)
        else:
            local.unlink(missing_ok=True)
        if not self.is_remote:
            return
        import pyarrow.fs as pafs

        remote = self._remote_path(relative)
        with self._errors(f"deleting {relative}"):
            kind = self.filesystem.get_file_info(remote).type
            if kind == pafs.FileType.Directory:
                self.filesystem.delete_dir(remote)
            elif kind == pafs.FileType.File:
                self.filesystem.delete_file(remote)

    # ------------------------------------------------------------------------------------------ pull / push

    def pull(self, *paths: str | Path, marker: str | None = MANIFEST) -> None:
        """Bring each sub-path (file or folder) from the remote root into the mirror, copying only files whose
        size or modification time differ. A remote folder without `marker`, or no remote at all, is absent:
        the mirror's copy is removed. No-op for a plain local root."""
        if not self.is_remote:
            return
        for path in paths:
            relative = self._checked_relative(path)
            with self._errors(f"pulling {relative}"):
                self._pull(relative, marker)

    def push(self, *paths: str | Path, marker: str | None = MANIFEST) -> None:
        """Upload each finished sub-path (file or folder) of the mirror to the remote root: a folder's files
        first, then remote files it no longer has are deleted, then `marker` last. No-op for a local root."""
        if not self.is_remote:
            return
        for path in paths:
            relative = self._checked_relative(path)
            with self._errors(f"pushing {relative}"):
                self._push(relative, marker)

    def _checked_relative(self, path: str | Path) -> str:
        relative = self.relative(path)
        if relative is None or relative.startswith("..") or relative in ("", "."):
            raise ArtifactError(f"{path} is not a sub-path of the artifact root {display(self.root)}")
        return relative

    @contextlib.contextmanager
    def _errors(self, what: str):
        try:
            yield
        except OSError as err:  # pyarrow raises OSError for every I/O or network failure
            raise ArtifactError(f"artifact root {display(self.root)}: {what} failed: {err}") from None

    def _pull(self, relative: str, marker: str | None) -> None:
        import pyarrow.fs as pafs

        remote, local = self._remote_path(relative), self.local / relative
        info = self.filesystem.get_file_info(remote)
        if info.type == pafs.FileType.File:
            self._download(info, local)
            return
        files = self._remote_files(remote) if info.type == pafs.FileType.Directory else {}
        if not files or (marker is not None and marker not in files):
            if local.is_dir():
                shutil.rmtree(local)
            else:
                local.unlink(missing_ok=True)
            return
        if local.is_file():
            local.unlink()
        # the mirror follows the same rule as the remote: marker out first, back in last
        if marker is not None:
            (local / marker).unlink(missing_ok=True)
        for name, file_info in sorted(files.items()):
            if name != marker:
                self._download(file_info, local / name)
        for stale in _local_files(local) - set(files):
            (local / stale).unlink(missing_ok=True)
        if marker is not None:
            self._download(files[marker], local / marker)

    def _download(self, info, target: Path) -> None:
        import pyarrow.fs as pafs

        if target.is_file() and _same_file(target, info):
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(_temporary_name(target.name))
        try:
            pafs.copy_files(info.path, str(staging), source_filesystem=self.filesystem,
                            destination_filesystem=pafs.LocalFileSystem())
            if info.mtime_ns is not None:  # later pulls compare size and time, and skip unchanged files
                os.utime(staging, ns=(info.mtime_ns, info.mtime_ns))
            os.replace(staging, target)
        finally:
            staging.unlink(missing_ok=True)

    def _remote_files(self, remote: str) -> dict[str, Any]:
        import pyarrow.fs as pafs

        infos = self.filesystem.get_file_info(pafs.FileSelector(remote, recursive=True, allow_not_found=True))
        prefix = remote.rstrip("/") + "/"
        return {info.path[len(prefix):]: info for info in infos
                if info.type == pafs.FileType.File and info.path.startswith(prefix)
                and not any(_is_temporary(part) for part in info.path[len(prefix):].split("/"))}

    def _push(self, relative: str, marker: str | None) -> None:
        import pyarrow.fs as pafs

        remote, local = self._remote_path(relative), self.local / relative
        if local.is_file():
            self._upload_atomically(local, remote)
            _copy_time(local, self.filesystem.get_file_info(remote))
            return
        if not local.is_dir():
            raise ArtifactError(f"{local} does not exist: nothing to push to {self.describe(relative)}")
        names = _local_files(local)
        existing = self._remote_files(remote)
        made: set[str] = set()
        if marker is not None and marker in existing:
            self.filesystem.delete_file(existing[marker].path)  # from now on readers see no folder
        for name in sorted(names - {marker}):
            if name in existing and _same_file(local / name, existing[name]):
                continue  # uploaded before and unchanged since
            parent = f"{remote}/{name}".rsplit("/", 1)[0]
            if parent not in made:  # a local filesystem needs the folders; object stores ignore them
                self.filesystem.create_dir(parent, recursive=True)
                made.add(parent)
            pafs.copy_files(str(local / name), f"{remote}/{name}", source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.filesystem)
        for stale in set(existing) - names:
            self.filesystem.delete_file(existing[stale].path)
        if marker is not None and marker in names:
            self._upload_atomically(local / marker, f"{remote}/{marker}")
        for name, info in self._remote_files(remote).items():
            if name in names:
                _copy_time(local / name, info)

    def _upload_atomically(self, local: Path, remote: str) -> None:
        """A reader never sees half a file: object stores make an object visible only when its upload is
        complete; elsewhere (local, HDFS) the file is uploaded under a temporary name and moved into place."""
        import pyarrow.fs as pafs

        parent, _, name = remote.rpartition("/")
        self.filesystem.create_dir(parent, recursive=True)
        target = remote if self.filesystem.type_name in _ATOMIC_OBJECT_STORES else f"{parent}/{_temporary_name(name)}"
        pafs.copy_files(str(local), target, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.filesystem)
        if target != remote:
            self.filesystem.move(target, remote)


def _local_files(folder: Path) -> set[str]:
    if not folder.is_dir():
        return set()
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*")
            if path.is_file() and not any(_is_temporary(part) for part in path.relative_to(folder).parts)}


def _same_file(local: Path, info) -> bool:
    stat = local.stat()
    return info.mtime_ns is not None and stat.st_size == info.size and stat.st_mtime_ns == info.mtime_ns


def _copy_time(local: Path, info) -> None:
    """Give the mirror's copy the remote file's time, so that the next pull sees it as unchanged."""
    if info.mtime_ns is not None and local.is_file() and local.stat().st_size == info.size:
        os.utime(local, ns=(info.mtime_ns, info.mtime_ns))


def open_root(root: str | Path) -> ArtifactRoot:
    """The artifact root named by `root` (a local path or a URI). A URI's filesystem is opened and probed once
    per process (create the root, list it), so that a wrong scheme, missing credentials or an unreachable
    endpoint stop everything with a ConfigError before any stage starts."""
    root = str(root)
    if not is_uri(root):
        return ArtifactRoot(root=root, local=Path(root).expanduser())
    return _open_remote(root, os.environ.get(CACHE_DIR_ENV))


@functools.lru_cache(maxsize=None)
def _open_remote(root: str, cache_dir: str | None) -> ArtifactRoot:  # cache_dir: part of the cache key
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        check_root_form(root)
    except ValueError as err:
        raise ConfigError(f"artifact_root: {err}") from None
    try:
        filesystem, remote = pafs.FileSystem.from_uri(root)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as err:
        raise ConfigError(f"artifact_root {display(root)!r} is not a filesystem URI pyarrow can open: {err} "
                          "(known schemes include s3://, gs://, file://, hdfs://, abfs://)") from None
    except OSError as err:
        raise ConfigError(f"artifact_root {display(root)!r}: cannot open it: {err}; {_CREDENTIALS_HINT}") from None
    try:
        filesystem.create_dir(remote, recursive=True)
        filesystem.get_file_info(pafs.FileSelector(remote, allow_not_found=True))
    except OSError as err:
        raise ConfigError(f"artifact_root {display(root)!r}: cannot create or list {remote!r}: {err}; "
                          f"{_CREDENTIALS_HINT}") from None
    local = mirror_dir(root)
    local.mkdir(parents=True, exist_ok=True)
    return ArtifactRoot(root=root, local=local, remote=remote, filesystem=filesystem)


def join_uri(root: str, relative: str) -> str:
    """`relative` under a URI root, its query (endpoint options) kept: s3://b/run?x=1 + a/b -> s3://b/run/a/b?x=1."""
    base, sep, query = root.partition("?")
    return f"{base.rstrip('/')}/{relative.strip('/')}{sep}{query}"


def fetch_folder(location: str | Path) -> Path:
    """A finished folder (one with its manifest.json) as a local path: a plain path as it is; a URI such as
    s3://bucket/run/serving/model pulled into this machine's mirror of its parent. Serve replicas load their
    model through this, so a replica on any node of a cluster can load an export kept on an object store."""
    location = str(location)
    if not is_uri(location):
        return Path(location).expanduser()
    base, sep, query = location.partition("?")
    parent, _, name = base.rstrip("/").rpartition("/")
    if not name or parent.endswith(":/"):
        raise ConfigError(f"{display(location)!r}: expected a folder below a bucket or root, e.g. "
                          "s3://bucket/run/serving/model")
    root = open_root(parent + sep + query)
    root.pull(name)
    folder = root.local / name
    if not (folder / MANIFEST).is_file():
        raise ArtifactError(f"{display(location)} holds no finished folder ({MANIFEST} not found there)")
    return folder
