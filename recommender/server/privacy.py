"""A customer's rights (admin only): to be forgotten, to opt out, to see what is held about them."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from .admin import admin_required
from .params import check_id
from .stores import activity_store

bp = Blueprint("privacy", __name__, url_prefix="/v1/users")


@bp.delete("/<user_id>")
@admin_required
def forget(user_id: str) -> Response:
    """Erase the customer's events and wish list now and suppress the id: no personal
    recommendations from this moment, and the next training run drops their purchases."""
    user_id = check_id("user_id", user_id)
    erased = activity_store().forget(user_id)
    return jsonify(
        {
            "user_id": user_id,
            "forgotten": True,
            **erased,
            "note": "purchases leave the model at the next training run",
        }
    )


@bp.put("/<user_id>/opt-out")
@admin_required
def opt_out(user_id: str) -> Response:
    """No personal recommendations and no export rows; the data is kept."""
    return _set_opt_out(user_id, True)


@bp.delete("/<user_id>/opt-out")
@admin_required
def opt_in(user_id: str) -> Response:
    return _set_opt_out(user_id, False)


def _set_opt_out(user_id: str, opted_out: bool) -> Response:
    user_id = check_id("user_id", user_id)
    activity_store().set_opt_out(user_id, opted_out)
    return jsonify({"user_id": user_id, "opted_out": opted_out})


@bp.get("/<user_id>/data")
@admin_required
def subject_access(user_id: str) -> Response:
    """Everything the service holds about this id, as one document to hand to the customer."""
    user_id = check_id("user_id", user_id)
    held = activity_store().everything_about(user_id)
    customers = current_app.extensions["recommender_customers"]
    service = current_app.extensions["recommender"].get()
    return jsonify(
        {
            "user_id": user_id,
            **held,
            "customers_file": {
                "name": customers.names.get(user_id),
                "opted_out": user_id in customers.opted_out,
            },
            "current_model": {
                "version": service.version if service else None,
                "trained_on_their_purchases": bool(service and service.purchased(user_id)),
                "purchased_items_in_model": service.purchased_items(user_id) if service else [],
            },
        }
    )
