"""Errors of the orchestrator API; each answers with its status and a message saying what to fix."""

from freeflow.errors import FreeFlowError


class OrchestratorError(FreeFlowError):
    status = 500


class BadRequest(OrchestratorError):
    status = 400


class Unauthorized(OrchestratorError):
    status = 401


class NotFound(OrchestratorError):
    status = 404


class StoreError(OrchestratorError):
    """The store behind the directory (etcd) refused or failed a request."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or cannot serve now; the orchestrator answers again when it is back."""

    status = 503


class LeaseNotFound(StoreError):
    """A write named an etcd lease that has expired or was revoked in the meantime."""


class RevisionCompacted(StoreError):
    """etcd no longer keeps the history a watch asked for: it was compacted up to `revision`."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"etcd compacted its history up to revision {revision}")
        self.revision = revision
