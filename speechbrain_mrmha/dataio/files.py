"""Files written whole or not at all, and digests of file contents.

A writer never leaves a half-written file under the final name: it writes a
fresh temporary file in the destination folder, then renames it into place
(``os.replace`` is atomic on POSIX and Windows). The temporary name is
unique per process and call, so concurrent writers never share one, and the
file is created with ``open(..., "x")`` rather than ``tempfile.mkstemp``,
whose files are private (0600) whatever the umask.

Authors
 * speechbrain-mrmha developers
"""

import hashlib
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "DIGEST",
    "content_digest",
    "atomic_write",
    "write_text_atomic",
    "replace_folder",
]

DIGEST = "sha256"  # of file contents: hardware-accelerated (SHA-NI, ARMv8)


_CHUNK = 1 << 20  # bytes read at a time when hashing


def content_digest(path):
    """Hex digest (sha256) of a file's bytes, read in chunks: the identity of
    its content, whatever its name, place or modification time.

    Arguments
    ---------
    path : str or Path

    Returns
    -------
    digest : str
        64 hex digits.

    Example
    -------
    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "a.bin"
    >>> _ = f.write_bytes(b"abc")
    >>> content_digest(f)[:16]
    'ba7816bf8f01cfea'
    """
    digest = hashlib.new(DIGEST)
    buffer = bytearray(_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fin:
        while True:
            count = fin.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
    return digest.hexdigest()


def _temporary_name(path):
    """A fresh hidden name next to ``path``."""
    path = Path(path)
    token = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    return path.parent / f".{path.name}.{token}.tmp"


@contextmanager
def atomic_write(path, mode="w", encoding="utf-8"):
    """Open a temporary file that replaces ``path`` only if the block ends
    without an exception; on an exception the temporary file is removed and
    ``path`` keeps its old content (or stays absent).

    Arguments
    ---------
    path : str or Path
        The destination file; its folder is created if needed.
    mode : str
        ``"w"`` (text) or ``"wb"`` (binary).
    encoding : str
        Text encoding (ignored in binary mode).

    Yields
    ------
    handle : file object
        Open for writing; also has the temporary path as ``handle.name``.

    Example
    -------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_write(out) as fout:
    ...     _ = fout.write("hello")
    >>> out.read_text()
    'hello'
    >>> try:
    ...     with atomic_write(out) as fout:
    ...         _ = fout.write("half")
    ...         raise RuntimeError("interrupted")
    ... except RuntimeError:
    ...     pass
    >>> out.read_text(), len(list(out.parent.iterdir()))
    ('hello', 1)
    """
    if mode not in ("w", "wb"):
        raise ValueError(
            f"atomic_write: mode must be 'w' or 'wb', got {mode!r}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    kwargs = {} if mode == "wb" else {"encoding": encoding, "newline": ""}
    try:
        with open(tmp, mode.replace("w", "x"), **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path, text, encoding="utf-8"):
    """Write ``text`` to ``path`` atomically (see ``atomic_write``).

    Arguments
    ---------
    path : str or Path
    text : str
    encoding : str

    Returns
    -------
    path : Path

    Example
    -------
    >>> import tempfile
    >>> out = write_text_atomic(Path(tempfile.mkdtemp()) / "b.txt", "x\\n")
    >>> out.read_text()
    'x\\n'
    """
    with atomic_write(path, "w", encoding=encoding) as fout:
        fout.write(text)
    return Path(path)


def replace_folder(folder, fill):
    """Build a folder under a temporary name and swap it in whole.

    ``fill(staging)`` writes the content into the empty ``staging`` folder;
    only when it returns is ``folder`` replaced (an old ``folder`` is moved
    aside first, then deleted). On an exception ``folder`` is unchanged.

    Arguments
    ---------
    folder : str or Path
        The destination folder.
    fill : callable
        Called with the staging folder (a Path).

    Returns
    -------
    folder : Path

    Example
    -------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "model"
    >>> _ = replace_folder(out, lambda d: (d / "a.txt").write_text("1"))
    >>> _ = replace_folder(out, lambda d: (d / "b.txt").write_text("2"))
    >>> sorted(p.name for p in out.iterdir())
    ['b.txt']
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = _temporary_name(folder)
    staging.mkdir()
    old = None
    try:
        fill(staging)
        if folder.exists():
            old = _temporary_name(folder)
            os.replace(folder, old)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
        if old is not None and old.exists():
            shutil.rmtree(old)
    return folder
