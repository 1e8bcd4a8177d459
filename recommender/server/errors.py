"""JSON errors for every failure: ``{"error": {"code": ..., "message": ...}}``, never HTML or a trace."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from ..errors import StoreUnavailable

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a view raises to answer with ``status`` and a machine-readable ``code``."""

    def __init__(
        self, status: int, code: str, message: str, details: list[dict] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_response(
    status: int, code: str, message: str, details: list[dict] | None = None
) -> tuple[Response, int]:
    error: dict = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return jsonify({"error": error}), status


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError) -> tuple[Response, int]:
        response, status = error_response(error.status, error.code, error.message, error.details)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="recommender admin"'
        return response, status

    @app.errorhandler(StoreUnavailable)
    def handle_store_unavailable(error: StoreUnavailable) -> tuple[Response, int]:
        """Nothing was stored: the shop's back end retries (``Retry-After``)."""
        response, status = error_response(
            503,
            "store_unavailable",
            "the activity store cannot be reached; nothing was stored, retry shortly",
        )
        response.headers["Retry-After"] = "1"
        return response, status

    @app.errorhandler(HTTPException)
    def handle_http_exception(error: HTTPException) -> tuple[Response, int]:
        code = (error.name or "error").lower().replace(" ", "_")
        return error_response(error.code or 500, code, error.description or error.name)

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception) -> tuple[Response, int]:
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; see the server log")
