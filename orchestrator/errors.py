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
