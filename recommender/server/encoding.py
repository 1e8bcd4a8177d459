"""JSON responses written by orjson: the whole body encoded in one call, in C.

Flask's default provider encodes through the standard library's ``json``, which walks every
recommendation entry in Python; on a personal answer that was about a tenth of the server's
time per request. Request bodies are still parsed by the standard library, so what the API
accepts (and the 400s it answers) does not change.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from werkzeug.sansio.response import Response

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class OrjsonProvider(DefaultJSONProvider):
    """``DefaultJSONProvider`` with orjson's encoder; what orjson cannot encode (a Decimal, a
    set) goes through Flask's own conversion, and keys keep their order."""

    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs:  # indent, sort_keys: the standard library honours every option
            return super().dumps(obj, **kwargs)
        return orjson.dumps(obj, default=self.default, option=_OPTIONS).decode()

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        if (self.compact is None and self._app.debug) or self.compact is False:
            return super().response(obj)
        body = orjson.dumps(obj, default=self.default, option=_OPTIONS | orjson.OPT_APPEND_NEWLINE)
        return self._app.response_class(body, mimetype=self.mimetype)  # type: ignore[arg-type]


def init_app(app: Flask) -> None:
    app.json = OrjsonProvider(app)
