"""An import's batch writers: each batch's transaction and COMMIT overlapped with
the staging of the next, locally or through a server. Apart from the import's
passes (:mod:`._svc_records_import`): they hold their own state, the batch in flight.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from childvault.vault._svc_records_write import RecordWrites, _Staged

if TYPE_CHECKING:
    from childvault.vault._sqlcipher._conn import BackgroundCommit


class _ImportCounter:
    """What both import writers keep: the import's context, the records counted
    once their batch is known committed, the report's sample of ids, and the
    progress calls."""

    def __init__(
        self,
        service: RecordWrites,
        moment: datetime,
        source: str,
        progress: Callable[[int, int], None] | None,
        total: int,
    ) -> None:
        self._service = service
        self._moment = moment
        self._source = source
        self._progress = progress
        self._total = total
        self.count = 0
        #: The first 1,000 ids written (the report's sample).
        self.imported: list[str] = []

    def _committed(self, ids: list[str], progress_to: int, report: bool) -> None:
        """Count a batch known committed and report its progress if asked."""
        self.count += len(ids)
        if len(self.imported) < 1000:
            self.imported.extend(ids[: 1000 - len(self.imported)])
        if report and self._progress is not None:
            self._progress(progress_to, self._total)


class _BatchWriter(_ImportCounter):
    """An import's batches written in turn, each in its own transaction, each
    COMMIT overlapping the staging of the next batch (docs/decisions.md, "An
    import commits a batch while it prepares the next").

    With a local SQLCipher store (``background_commit``) batch N's rows and log
    entries are written on the calling thread, as before; its COMMIT (SQLCipher
    encrypting the pages into the WAL, then fsync, without the GIL) runs on a
    thread of its own while the caller seals, wraps and signs batch N+1, which
    needs no database. :meth:`write` waits for N's COMMIT before writing N+1, so
    batches commit in order, each log append reads the head N left, and a
    failure of N is raised before N+1 is written (N+1 is then discarded).
    Other stores commit in turn, as before.
    """

    def __init__(
        self,
        service: RecordWrites,
        moment: datetime,
        source: str,
        progress: Callable[[int, int], None] | None,
        total: int,
    ) -> None:
        super().__init__(service, moment, source, progress, total)
        make = getattr(service.s.db, "background_commit", None)
        self._commits: BackgroundCommit | None = None if make is None else make()
        #: The batch whose COMMIT is in flight: its ids, progress row, whether reported.
        self._pending: tuple[list[str], int, bool] | None = None

    def write(
        self, staged: _Staged, progress_to: int, *, report: bool, finished: bool = False
    ) -> None:
        """Write ``staged`` with the import's progress at row ``progress_to``, once
        the previous batch is committed. ``report``: call ``progress(progress_to,
        total)`` once it is committed. ``finished``: the last batch, which marks
        the import finished."""
        self.wait()
        ids = self._service._write(
            staged,
            self._moment,
            source=self._source,
            progress_to=progress_to,
            commits=self._commits,
            finished=finished,
        )
        self._pending = (ids, progress_to, report)
        if self._commits is None:
            self.wait()

    def close(self) -> None:
        """Wait for the COMMIT in flight (its failure is raised) and stop the
        commit thread."""
        try:
            self.wait()
        finally:
            self._pending = None
            if self._commits is not None:
                self._commits.close()

    def wait(self) -> None:
        """Finish the batch in flight, if any: its COMMIT waited for (its failure
        raised), its ids counted and its progress reported."""
        if self._pending is None:
            return
        ids, progress_to, report = self._pending
        self._pending = None
        if self._commits is not None:
            # The commit thread's failure is raised here, in the caller's thread.
            self._commits.wait()
        self._committed(ids, progress_to, report)


class _PipelinedWriter(_ImportCounter):
    """An import's batches through a server: batch N's one request is checked and
    stored by the server while this client seals, signs and encodes batch N+1
    (``RemoteBackend.pipelined_appends``; docs/decisions.md, "An import through
    the server overlaps client and server"). The interface of
    :class:`_BatchWriter`; a batch counts, and its progress is reported, only
    once the server has answered that it committed it.

    What the backend guarantees: requests go in order, one at a time; N+1 is
    sent only after N's answer, and is discarded (nothing of it sent) if N
    failed, whose failure is then raised here; a batch refused for a moved head
    is written again from the real head, then the batch behind it.
    """

    def __init__(
        self,
        service: RecordWrites,
        moment: datetime,
        source: str,
        progress: Callable[[int, int], None] | None,
        total: int,
        pipelined: Callable[[], contextlib.AbstractContextManager[None]],
    ) -> None:
        super().__init__(service, moment, source, progress, total)
        db = service.s.db
        self._in_flight: Callable[[], int] = lambda: int(getattr(db, "appends_in_flight", 0))
        self._settle: Callable[[], None] = getattr(db, "settle_appends", lambda: None)
        self._context = pipelined()
        self._context.__enter__()
        self._closed = False
        #: Batches written, oldest first, not yet known committed: ids, progress, report.
        self._pending: list[tuple[list[str], int, bool]] = []

    def write(
        self, staged: _Staged, progress_to: int, *, report: bool, finished: bool = False
    ) -> None:
        """Write ``staged`` with the import's progress at row ``progress_to`` (see
        :meth:`_BatchWriter.write`); returns while the server stores it."""
        try:
            ids = self._service._write(
                staged,
                self._moment,
                source=self._source,
                progress_to=progress_to,
                finished=finished,
            )
        except BaseException:
            self._failed()
            raise
        self._pending.append((ids, progress_to, report))
        self._count_committed()

    def wait(self) -> None:
        """Wait for the batch in flight, if any (its failure raised), and count it."""
        try:
            self._settle()
        except BaseException:
            self._failed()
            raise
        self._count_committed()

    def _failed(self) -> None:
        """After a failure: a batch no longer in flight and not counted was not
        committed (its failure is the one raised), so it never counts."""
        if not self._in_flight():
            self._pending.clear()

    def close(self) -> None:
        """Wait for the batch in flight (its failure is raised) and leave the pipeline."""
        if self._closed:
            return
        self._closed = True
        try:
            self.wait()
        finally:
            self._pending = []
            # Leaving waits for the answer (only when the wait above was interrupted).
            self._context.__exit__(None, None, None)

    def _count_committed(self) -> None:
        """Count (and report) the batches the server has answered for: all but
        the one still in flight."""
        while len(self._pending) > self._in_flight():
            self._committed(*self._pending.pop(0))
