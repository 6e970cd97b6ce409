"""The one write path: temporary file, verification, atomic rename; a failed write never leaves a final name.

Every output (images, label maps, caches, checkpoints, JSON) is first written to a temporary file in the
destination folder (same file system), then checked, then moved over the target with :func:`os.replace`,
which is atomic on POSIX and Windows. The check matters because not every writer reports a full disk: ITK's
NIfTI writer prints ``NWAD: wrote only 0 of N bytes`` and returns normally, so without a verification a
truncated file would be renamed to the final name. The verification is at least "the file exists and is
not empty"; callers pass a ``verify`` callable for format-specific read-back (image headers, gzip streams).

Operating-system errors a user can cause (disk full, quota, read-only or foreign folder) become
:class:`~dvcl.errors.OutputWriteError` with one line naming the target; the temporary file is removed on
every failure, :class:`KeyboardInterrupt` included.

:func:`check_writable` is the cheap question asked *before* long work starts (segment, prepare, train,
export, phantom): can this folder be written, and does it have room for roughly this many bytes?
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Union

import numpy as np

from dvcl.errors import DVCLError, OutputWriteError

PathLike = Union[str, "os.PathLike[str]"]

#: errno values that mean "the user's output location cannot take this file", not a bug of ours.
USER_WRITE_ERRNOS = frozenset(
    e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EACCES, errno.EPERM, errno.EROFS,
                errno.EFBIG, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG) if e is not None
)

#: Headroom kept free on top of an estimate: file-system metadata, logs, the estimate's own error.
FREE_SPACE_MARGIN = 16 * 1024 * 1024

Verifier = Callable[[Path], None]


def describe_os_error(exc: OSError, target: Optional[PathLike] = None) -> str:
    """One line for an :class:`OSError`: ``<path>: <what went wrong>`` in words a user acts on."""
    path = target if target is not None else (exc.filename or "")
    reason = {
        errno.ENOSPC: "no space left on the device",
        errno.EFBIG: "file too large for the file system or the process's file-size limit (disk full?)",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "read-only file system",
        errno.ENOENT: "no such file or folder",
        errno.ENOTDIR: "a part of the path is not a folder",
        errno.EISDIR: "is a folder",
        errno.ENAMETOOLONG: "file name too long",
    }.get(exc.errno or -1, exc.strerror or str(exc))
    if getattr(errno, "EDQUOT", None) is not None and exc.errno == errno.EDQUOT:
        reason = "disk quota exceeded"
    return f"{path}: {reason}" if path else reason


def _mkdir_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in USER_WRITE_ERRNOS:
            raise OutputWriteError(f"cannot create output folder {describe_os_error(exc, target.parent)}") from exc
        raise


@contextlib.contextmanager
def atomic_path(target: PathLike, suffix: Optional[str] = None, verify: Optional[Verifier] = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success verify it and move it over ``target``.

    The temporary name keeps the target's suffix (e.g. ``.nii.gz``) so writers that pick a format from the
    extension (SimpleITK, numpy) still work. After the body returns, the temporary file must exist and be
    non-empty, and ``verify(tmp)`` (if given) must return without raising; only then is it renamed.

    Raises:
        OutputWriteError: the folder cannot be written (disk full, read-only, permission), or the written
            file failed verification (e.g. a writer that silently wrote a truncated file).
    """
    target = Path(target)
    _mkdir_parent(target)
    if suffix is None:
        name = target.name
        suffix = name[name.index(".") :] if "." in name else ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name.split('.')[0]}.", suffix=".tmp" + suffix,
                                   dir=target.parent)
    except OSError as exc:
        if exc.errno in USER_WRITE_ERRNOS:
            raise OutputWriteError(f"cannot write {describe_os_error(exc, target)}") from exc
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            _verify_written(tmp_path, target, verify)
            # mkstemp creates 0600 files; give the result the permissions a plain open() would have
            os.chmod(tmp_path, 0o666 & ~_umask())
            os.replace(tmp_path, target)
        except OSError as exc:
            if exc.errno in USER_WRITE_ERRNOS:
                raise OutputWriteError(f"cannot write {describe_os_error(exc, target)}") from exc
            raise
        except OutputWriteError:
            raise
        except Exception as exc:  # noqa: BLE001 - torch.save, safetensors, numpy wrap a failed write in their own types
            if not isinstance(exc, DVCLError) and _looks_like_write_failure(exc, target):
                raise OutputWriteError(f"cannot write {target}: the write failed (disk full or file-size "
                                       "limit?)") from exc
            raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


_WRITE_FAILURE_HINTS = ("write failed", "failed writing", "no space left", "storagefull", "code: 28",
                        "file too large", "code: 27", "os error 27", "os error 28", "wrote only",
                        "quota exceeded", "read-only file system")


def _looks_like_write_failure(exc: BaseException, target: Path) -> bool:
    text = str(exc).lower()
    if any(h in text for h in _WRITE_FAILURE_HINTS):
        return True
    try:
        return shutil.disk_usage(target.parent).free < 1024 * 1024
    except OSError:
        return False


def _verify_written(tmp: Path, target: Path, verify: Optional[Verifier]) -> None:
    try:
        size = tmp.stat().st_size
    except FileNotFoundError:
        raise OutputWriteError(f"cannot write {target}: the writer produced no file") from None
    if size == 0:
        raise OutputWriteError(f"cannot write {target}: the written file is empty (disk full?)")
    if verify is not None:
        try:
            verify(tmp)
        except OutputWriteError as exc:
            raise OutputWriteError(f"cannot write {target}: {exc} (disk full?)") from exc
        except Exception as exc:  # noqa: BLE001 - any read-back failure means the file is not what we wrote
            msg = str(exc).strip().splitlines()
            raise OutputWriteError(f"cannot write {target}: the written file does not read back "
                                   f"({msg[-1] if msg else type(exc).__name__}); disk full?") from exc


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(target: PathLike, data: bytes) -> None:
    """Write ``data`` and verify the file holds exactly ``len(data)`` bytes."""
    def verify(tmp: Path) -> None:
        if tmp.stat().st_size != len(data):
            raise OutputWriteError(f"wrote {tmp.stat().st_size} of {len(data)} bytes")

    with atomic_path(target, verify=verify) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text_atomic(target: PathLike, text: str) -> None:
    """Write UTF-8 text; the full read-back is the byte-count check of :func:`write_bytes_atomic`."""
    write_bytes_atomic(target, text.encode("utf-8"))


def finite_or_none(data: Any) -> Any:
    """``data`` with every NaN or infinite float (in dicts, lists and tuples) replaced by None, and numpy scalars
    made Python numbers.

    Python writes such floats as ``NaN``/``Infinity``, which is not JSON: strict readers (JavaScript, many C++
    and Java parsers, ``jq``) refuse the whole file. None (``null``) says "not measured" in every reader.
    """
    if isinstance(data, np.generic):
        data = data.item()
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite_or_none(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_none(v) for v in data]
    return data


def write_json_atomic(target: PathLike, data: Any, indent: int = 2, strict: bool = False) -> None:
    """Write ``data`` as JSON. ``strict``: standard JSON only, a non-finite float becomes ``null``
    (:func:`finite_or_none`): for files other programs read, such as a model package's model.json."""
    if strict:
        data = finite_or_none(data)
    text = json.dumps(data, indent=indent, sort_keys=False, allow_nan=not strict)
    write_text_atomic(target, text + "\n")


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


#: Name of the temporary files :func:`atomic_path` makes (``.<stem>.<8 random>.tmp<suffix>``).
_TEMP_RE = re.compile(r"^\.[^.]*\.[A-Za-z0-9_]{8}\.tmp(\.|$)")
#: A temporary file untouched this long belongs to a killed process (a live writer keeps touching it).
STALE_TEMP_SECONDS = 3600.0


def clean_stale_temps(folder: PathLike, max_age: float = STALE_TEMP_SECONDS) -> List[Path]:
    """Remove temporary files of :func:`atomic_path` left by killed processes in ``folder`` and its subfolders
    (one level), those untouched for ``max_age`` seconds. Returns what was removed."""
    removed: List[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    now = time.time()
    dirs = [folder] + [d for d in folder.iterdir() if d.is_dir() and not d.is_symlink()]
    for d in dirs:
        with contextlib.suppress(OSError):
            for entry in os.scandir(d):
                if _TEMP_RE.match(entry.name) and entry.is_file(follow_symlinks=False) \
                        and now - entry.stat(follow_symlinks=False).st_mtime > max_age:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
                        removed.append(Path(entry.path))
    return removed


def check_writable(folder: PathLike, need_bytes: int = 0, what: str = "output") -> None:
    """Fail fast, before long work, when ``folder`` cannot receive about ``need_bytes`` of output.

    ``folder`` need not exist yet: the nearest existing ancestor is checked (it must be a writable folder).
    Writability is tested by creating and removing a temporary file, which also catches read-only mounts
    and ACLs that :func:`os.access` misses (and works for root, for whom permission bits do not apply).

    Temporary files a killed run left in ``folder`` (older than an hour) are removed on the way.

    Raises:
        OutputWriteError: not a folder, not writable, or less free space than ``need_bytes`` plus a margin.
    """
    folder = Path(folder)
    clean_stale_temps(folder)
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise OutputWriteError(f"{what} location {folder}: {base} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".dvcl-write-check.", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputWriteError(f"{what} location {folder} is not writable ({describe_os_error(exc, base)})") from exc
    if need_bytes > 0:
        free = shutil.disk_usage(base).free
        if free < need_bytes + FREE_SPACE_MARGIN:
            raise OutputWriteError(
                f"{what} location {folder}: only {free / 2**20:.0f} MiB free, about "
                f"{(need_bytes + FREE_SPACE_MARGIN) / 2**20:.0f} MiB needed"
            )
