"""``GET /openapi.json``: the API as an OpenAPI 3 document, checked against the routes by a test."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

bp = Blueprint("openapi", __name__)

_ID = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[^\\x00-\\x1f\\x7f]+$"}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "array"},
            },
        }
    },
}
_ENTRY = {
    "type": "object",
    "required": ["item_id", "name", "score", "source"],
    "properties": {
        "item_id": {"type": "string"},
        "name": {"type": "string"},
        "price": {"type": ["number", "null"]},
        "score": {"type": ["number", "null"]},
        "source": {"type": "string"},
        "bought_both": {"type": "integer"},
        "because": {"type": "object"},
        "last_bought": {"type": "string", "format": "date"},
        "times_bought": {"type": "integer", "minimum": 1},
        "usually_every_days": {"type": "number"},
    },
}
_RECOMMENDATIONS = {
    "type": "object",
    "required": ["strategy", "model_version", "recommendations"],
    "properties": {
        "strategy": {
            "type": "string",
            "enum": ["item-knn", "als", "blend", "popular", "repeat"],
        },
        "model_version": {"type": "string"},
        "fallback_reason": {"type": "string"},
        "exclude_purchased": {"type": "string", "enum": ["true", "false", "repeat"]},
        "activity": {
            "type": "string",
            "enum": ["unavailable"],
            "description": "the activity store could not be reached: the answer ignores recent activity",
        },
        "recommendations": {"type": "array", "items": _ENTRY},
        "recommendation_id": {
            "type": "string",
            "description": "signed: send it with the view, cart or purchase that follows "
            "(POST /v1/events) to attribute it to this list",
        },
        "experiment": {
            "type": "object",
            "required": ["name", "variant"],
            "properties": {"name": {"type": "string"}, "variant": {"type": "string"}},
        },
    },
}
_SHOPPER = {
    "name": "shopper_id",
    "in": "query",
    "schema": _ID,
    "description": "a customer or session id: places the page view in a running experiment",
}
_FILTERS = [
    {
        "name": "exclude",
        "in": "query",
        "schema": {"type": "string"},
        "description": "comma-separated item ids",
    },
    {"name": "available", "in": "query", "schema": {"type": "boolean"}},
    {"name": "category", "in": "query", "schema": _ID},
    {"name": "min_price", "in": "query", "schema": {"type": "number"}},
    {"name": "max_price", "in": "query", "schema": {"type": "number"}},
    {
        "name": "max_per_category",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
    },
]


_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}


def _experiment() -> dict[str, Any]:
    """An experiment's definition; ``model_version`` lists the versions on disk now."""
    from .. import artifacts
    from ..experiments import DECISION_METRICS, ENDPOINTS, STRATEGIES

    versions = artifacts.versions(current_app.extensions["recommender"].models_dir)
    return {
        "type": "object",
        "required": ["variants"],
        "additionalProperties": False,
        "properties": {
            "variants": {
                "type": "array",
                "minItems": 2,
                "maxItems": 10,
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": _NAME,
                        "weight": {
                            "type": "number",
                            "minimum": 0,
                            "exclusiveMinimum": True,
                            "maximum": 1e6,
                        },
                        "model_version": {"enum": versions} if versions else _NAME,
                        "strategy": {"enum": list(STRATEGIES)},
                    },
                },
            },
            "control": _NAME,
            "endpoints": {"type": "array", "items": {"enum": list(ENDPOINTS)}},
            "metric": {"enum": list(DECISION_METRICS)},
            "lift": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 10},
        },
    }


def _k() -> dict[str, Any]:
    return {
        "name": "k",
        "in": "query",
        "schema": {
            "type": "integer",
            "minimum": 1,
            "maximum": current_app.extensions["recommender_config"].max_k,
        },
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _ID}


def _answers(ok: dict[str, Any] | None, *errors: int, ok_status: str = "200") -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(code): {"description": "error", "content": {"application/json": {"schema": _ERROR}}}
        for code in errors
    }
    responses[ok_status] = {
        "description": "ok",
        **({"content": {"application/json": {"schema": ok}}} if ok else {}),
    }
    return responses


def _html() -> dict[str, Any]:
    return {
        "200": {"description": "a page", "content": {"text/html": {"schema": {"type": "string"}}}}
    }


def _recommend(summary: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [*parameters, _k(), *_FILTERS],
        "responses": _answers(_RECOMMENDATIONS, 400, 503),
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3 document of every route. Long because it is data: one literal with each
    route's parameters, bodies and answers."""
    admin: list[dict[str, list[str]]] = [{"bearer": []}]
    item, user = _path("item_id"), _path("user_id")
    event = {
        "type": "object",
        "required": ["user_id", "item_id", "type"],
        "additionalProperties": False,
        "properties": {
            "user_id": _ID,
            "item_id": _ID,
            "type": {"enum": ["view", "cart", "wishlist", "purchase"]},
            "timestamp": {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}]},
            "recommendation_id": {"type": "string", "minLength": 1, "maxLength": 8192},
            "quantity": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1e6},
            "price": {"type": "number", "minimum": 0},
        },
    }
    name = {"name": "name", "in": "path", "required": True, "schema": _NAME}
    days = {
        "name": "days",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": 366},
    }
    max_items = current_app.extensions["recommender_config"].max_items
    id_list = {"type": "array", "maxItems": max_items, "items": _ID}
    body_filters = {f["name"]: f["schema"] for f in _FILTERS if f["name"] != "exclude"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "recommender",
            "version": "1",
            "description": "Recommendations from a shop's purchase log. Admin endpoints need a bearer token "
            "and belong on the shop's back end only.",
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/": {"get": {"summary": "the explorer page (HTML)", "responses": _html()}},
            "/explore": {"get": {"summary": "the explorer page (HTML)", "responses": _html()}},
            "/v1/catalog/search": {
                "get": {
                    "summary": "catalog items whose id or name contains q, most bought first",
                    "parameters": [
                        {"name": "q", "in": "query", "schema": _ID},
                        {
                            "name": "page",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                        },
                        {
                            "name": "per_page",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                        },
                    ],
                    "responses": _answers(
                        {"type": "object", "required": ["total", "items"]}, 400, 503
                    ),
                }
            },
            "/v1/users/{user_id}/history": {
                "get": {
                    "summary": "purchases in the model and recent activity",
                    "parameters": [_path("user_id")],
                    "responses": _answers({"type": "object"}, 400, 503),
                }
            },
            "/v1/model/report": {
                "get": {
                    "summary": "the served model's evaluation report (HTML)",
                    "responses": {**_answers(None, 404, 503), **_html()},
                }
            },
            "/health": {
                "get": {"summary": "the process answers", "responses": _answers({"type": "object"})}
            },
            "/ready": {
                "get": {
                    "summary": "a model is loaded",
                    "responses": _answers({"type": "object"}, 503),
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text"}},
                }
            },
            "/openapi.json": {
                "get": {"summary": "this document", "responses": _answers({"type": "object"})}
            },
            "/v1/model": {
                "get": {
                    "summary": "the model being served",
                    "responses": _answers({"type": "object"}, 503),
                }
            },
            "/v1/items/{item_id}/also-bought": {
                "get": _recommend("customers who bought this also bought", item, _SHOPPER)
            },
            "/v1/items/{item_id}/bought-together": {
                "get": _recommend("frequently bought together", item, _SHOPPER)
            },
            "/v1/users/{user_id}/recommendations": {
                "get": _recommend(
                    "personal picks",
                    user,
                    {
                        "name": "exclude_purchased",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["true", "false", "repeat"]},
                        "description": "true: no purchase comes back; false: any may, ranked by "
                        "the customer's habit; repeat: those rebought may (absent: the model's "
                        "default, chosen by its training run)",
                    },
                )
            },
            "/v1/users/{user_id}/buy-again": {
                "get": _recommend(
                    "buy it again: the customer's own items most likely bought next, each with "
                    "last_bought, times_bought and usually_every_days",
                    user,
                )
            },
            "/v1/users/{user_id}/page-you-made": {"get": _recommend("the page you made", user)},
            "/v1/users/{user_id}/wishlist": {
                "get": {
                    "summary": "the wish list",
                    "parameters": [user],
                    "responses": _answers({"type": "object"}, 400, 503),
                }
            },
            "/v1/users/{user_id}/wishlist/{item_id}": {
                "put": {
                    "summary": "add to the wish list",
                    "parameters": [user, item],
                    "responses": {
                        **_answers({"type": "object"}, 400, 409, 503),
                        "201": {"description": "added"},
                    },
                },
                "delete": {
                    "summary": "remove from the wish list",
                    "parameters": [user, item],
                    "responses": _answers(None, 400, 503, ok_status="204"),
                },
            },
            "/v1/users/{user_id}/wishlist/recommendations": {
                "get": _recommend("from the wish list", user)
            },
            "/v1/users/{user_id}/alerts": {
                "get": {
                    "summary": "current back-in-stock, price-drop and new-for-you alerts",
                    "parameters": [user],
                    "responses": _answers(
                        {"type": "object", "required": ["user_id", "alerts"]}, 400, 503
                    ),
                }
            },
            "/v1/recommendations": {
                "post": {
                    "summary": "from a list of items the shop holds",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["items"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "items": id_list,
                                        "exclude": id_list,
                                        **body_filters,
                                        "k": _k()["schema"],
                                        "shopper_id": _ID,
                                    },
                                }
                            }
                        },
                    },
                    "responses": _answers(_RECOMMENDATIONS, 400, 413, 503),
                }
            },
            "/v1/events": {
                "post": {
                    "summary": "record what shoppers do (all or nothing)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["events"],
                                    "properties": {
                                        "events": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": 1000,
                                            "items": event,
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        **_answers(None, 400, 413, 503),
                        "201": {
                            "description": "stored",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "stored": {"type": "integer"},
                                            "attributed": {"type": "integer"},
                                            "not_attributed": {"type": "integer"},
                                        },
                                    }
                                }
                            },
                        },
                    },
                }
            },
            "/v1/users/{user_id}": {
                "delete": {
                    "summary": "forget a customer (admin)",
                    "security": admin,
                    "parameters": [user],
                    "responses": _answers({"type": "object"}, 400, 401, 403, 503),
                }
            },
            "/v1/users/{user_id}/opt-out": {
                "put": {
                    "summary": "opt out of personalisation (admin)",
                    "security": admin,
                    "parameters": [user],
                    "responses": _answers({"type": "object"}, 400, 401, 403, 503),
                },
                "delete": {
                    "summary": "opt back in (admin)",
                    "security": admin,
                    "parameters": [user],
                    "responses": _answers({"type": "object"}, 400, 401, 403, 503),
                },
            },
            "/v1/users/{user_id}/data": {
                "get": {
                    "summary": "everything held about a customer (admin)",
                    "security": admin,
                    "parameters": [user],
                    "responses": _answers({"type": "object"}, 400, 401, 403, 503),
                }
            },
            "/v1/admin/reload": {
                "post": {
                    "summary": "load models/current now (admin)",
                    "security": admin,
                    "responses": _answers({"type": "object"}, 401, 403),
                }
            },
            "/v1/admin/catalog/{item_id}": {
                "put": {
                    "summary": "record an item's new price and/or availability (admin)",
                    "security": admin,
                    "parameters": [item],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "minProperties": 1,
                                    "additionalProperties": False,
                                    "properties": {
                                        "price": {"type": "number", "minimum": 0},
                                        "available": {"type": "boolean"},
                                    },
                                }
                            }
                        },
                    },
                    "responses": _answers({"type": "object"}, 400, 401, 403, 503),
                }
            },
            "/v1/admin/experiments": {
                "get": {
                    "summary": "every experiment, running or stopped (admin)",
                    "security": admin,
                    "responses": _answers({"type": "object"}, 401, 403, 503),
                }
            },
            "/v1/admin/experiments/{name}": {
                "put": {
                    "summary": "start (or replace and restart) an experiment (admin)",
                    "security": admin,
                    "parameters": [name],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _experiment()}},
                    },
                    "responses": {
                        **_answers({"type": "object"}, 400, 401, 403, 409, 503),
                        "201": {"description": "started"},
                    },
                }
            },
            "/v1/admin/experiments/{name}/stop": {
                "post": {
                    "summary": "stop an experiment: all traffic to the current model (admin)",
                    "security": admin,
                    "parameters": [name],
                    "responses": _answers({"type": "object"}, 401, 403, 404, 503),
                }
            },
            "/v1/admin/experiments/{name}/results": {
                "get": {
                    "summary": "per variant with 95% intervals, and each against control (admin)",
                    "security": admin,
                    "parameters": [
                        name,
                        {
                            "name": "lift",
                            "in": "query",
                            "schema": {
                                "type": "number",
                                "minimum": 0,
                                "exclusiveMinimum": True,
                                "maximum": 10,
                            },
                        },
                    ],
                    "responses": _answers({"type": "object"}, 400, 401, 403, 404, 503),
                }
            },
            "/v1/admin/performance": {
                "get": {
                    "summary": "impressions, CTR, conversion and attributed revenue per day (admin)",
                    "security": admin,
                    "parameters": [days],
                    "responses": _answers({"type": "object"}, 400, 401, 403, 503),
                }
            },
            "/v1/admin/performance/plots.svg": {
                "get": {
                    "summary": "the dashboard's plots (SVG, admin)",
                    "security": admin,
                    "parameters": [days],
                    "responses": {
                        **_answers(None, 400, 401, 403, 503),
                        "200": {
                            "description": "an SVG image",
                            "content": {"image/svg+xml": {"schema": {"type": "string"}}},
                        },
                    },
                }
            },
        },
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(document())
