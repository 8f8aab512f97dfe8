"""Import writes: store an uploaded CSV file where every worker can read it, and start the import job on it.

The file is streamed to the ``imports`` storage in blocks (``IMPORT_BLOCK_BYTES``), never held whole in memory; its
header line is checked first (cheap, and the most common mistake), the rest of the file by the job
(``emissions.jobs.imports``).
"""

from __future__ import annotations

import io
import uuid
from typing import IO, Any, cast

from django.contrib.auth.models import AbstractBaseUser
from django.core.files import File

from emissions.imports import FileProblem, header_line_check
from emissions.jobs.imports import imports_storage
from emissions.models import Job, Organization
from emissions.services.jobs import job_submit

IMPORT_BLOCK_BYTES = 1024 * 1024
# The header line must arrive within this many bytes (twenty column names take a few hundred).
HEADER_MAX_BYTES = 64 * 1024


class UploadTooLargeError(Exception):
    """The upload is larger than the limit it was stored under; nothing of it was kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"The file is larger than the {limit:,}-byte limit; split it into smaller files.")
        self.limit = limit


class _Body:
    """A read-only stream: ``head`` (already read), then the rest of ``stream``, refused beyond ``limit`` bytes.

    Not seekable, but storages rewind a file before saving it (``File.chunks``, django-storages' S3 backend): a rewind
    to where it already is, the start, is allowed.
    """

    def __init__(self, head: bytes, stream: IO[bytes] | None, limit: int) -> None:
        self.head, self.stream, self.limit, self.read_bytes = head, stream, limit, 0

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.read_bytes

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if (offset, whence) in ((0, io.SEEK_SET), (0, io.SEEK_CUR)) and (whence == io.SEEK_CUR or not self.read_bytes):
            return self.read_bytes
        raise io.UnsupportedOperation("An upload is read once, from its start.")

    def read(self, size: int = -1) -> bytes:
        if self.head:
            block, self.head = self.head, b""
        elif self.stream is None:
            return b""
        else:
            block = self.stream.read(IMPORT_BLOCK_BYTES if size is None or size < 0 else size)
        self.read_bytes += len(block)
        if self.read_bytes > self.limit:
            raise UploadTooLargeError(self.limit)
        return block


def _head(stream: IO[bytes] | None) -> bytes:
    """The stream's first bytes, through the first line break (or all of it, or ``HEADER_MAX_BYTES``)."""
    head = b""
    while stream is not None and b"\n" not in head and len(head) < HEADER_MAX_BYTES:
        block = stream.read(min(IMPORT_BLOCK_BYTES, HEADER_MAX_BYTES))
        if not block:
            break
        head += block
    return head


def import_upload_store(*, organization: Organization, stream: IO[bytes] | None, max_bytes: int) -> str:
    """Store a CSV file read from ``stream`` (``None``: an empty file) for ``organization``; return its storage name.

    ``FileProblem`` when its header line is not UTF-8, not CSV or names the wrong columns, ``UploadTooLargeError``
    beyond ``max_bytes``: nothing is kept then.
    """
    head = _head(stream)
    line_end = head.find(b"\n")
    if line_end < 0 and len(head) >= HEADER_MAX_BYTES:
        raise FileProblem(f"The first line (the column names) is longer than {HEADER_MAX_BYTES:,} bytes.")
    header_line_check(head if line_end < 0 else head[: line_end + 1])
    storage = imports_storage()
    name = f"uploads/{organization.pk}/{uuid.uuid4().hex}.csv"
    try:
        return storage.save(name, File(cast(IO[bytes], _Body(head, stream, max_bytes)), name=name))
    except BaseException:
        storage.delete(name)  # what was written before the failure
        raise


def import_start(
    *,
    organization: Organization,
    upload: str,
    dry_run: bool,
    chunk_rows: int,
    requested_by: AbstractBaseUser | None = None,
    submit: bool = True,
) -> Job:
    """The import job of the stored file ``upload`` (``import_upload_store``), ``chunk_rows`` rows per chunk.

    With ``submit`` the workers run it once the current transaction commits; without, the caller runs it
    (``emissions.jobs.imports.job_run_here``).
    """
    params: dict[str, Any] = {"file": upload, "dry_run": dry_run, "chunk_rows": chunk_rows}
    if submit:
        return job_submit(organization=organization, kind=Job.Kind.IMPORT, params=params, requested_by=requested_by)
    return Job.objects.create(organization=organization, kind=Job.Kind.IMPORT, params=params)
