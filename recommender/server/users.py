"""Customer pages: personal picks, the wish list and its recommendations, the page you made."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from .errors import ApiError
from .items import respond
from .params import check_id, exclude_purchased_param, filters, k_param
from .stores import activity_store, current_service, shopper_state, with_customers_file
from .tracing import arm, holdout

bp = Blueprint("users", __name__, url_prefix="/v1/users")


def personalisation_off(user_id: str) -> str | None:
    """``forgotten`` or ``opted_out`` when nothing personal may be used for this id."""
    return with_customers_file(user_id, activity_store().suppression(user_id))


@bp.get("/<user_id>/recommendations")
def recommendations(user_id: str) -> Response:
    """Personal picks; ``exclude_purchased`` says which purchases may come back (the model's
    default where absent: ``serving.repeat``)."""
    user_id, k, chosen = check_id("user_id", user_id), k_param(), filters()
    exclude_purchased = exclude_purchased_param()
    shopper = shopper_state(user_id)
    if reason := shopper.personalisation_off:
        return respond(
            {"user_id": user_id, **current_service().not_personal(user_id, k, chosen, reason)}
        )
    answering = arm(current_service(), user_id, suppression_checked=True)
    if (held := holdout(answering, k, chosen)) is not None:
        return respond({"user_id": user_id, **held})
    response = answering.service.for_user(user_id, k, chosen, exclude_purchased, shopper.recent)
    return respond({"user_id": user_id, **response, **shopper.activity})


@bp.get("/<user_id>/buy-again")
def buy_again(user_id: str) -> Response:
    """The customer's own items most likely bought next, with when and how often they buy them.
    Empty (not trending items) for an opted-out or forgotten customer: the list is made of
    their own purchases only."""
    user_id, k, chosen = check_id("user_id", user_id), k_param(), filters()
    shopper = shopper_state(user_id)
    if reason := shopper.personalisation_off:
        body = {
            "user_id": user_id,
            "strategy": "repeat",
            "model_version": current_service().version,
            "recommendations": [],
            "fallback_reason": reason,
        }
        return respond(body)
    answering = arm(current_service(), user_id, suppression_checked=True)
    if (held := holdout(answering, k, chosen)) is not None:
        return respond({"user_id": user_id, **held})
    response = answering.service.buy_again(user_id, k, chosen, shopper.recent)
    return respond({"user_id": user_id, **response, **shopper.activity})


@bp.get("/<user_id>/alerts")
def alerts(user_id: str) -> Response:
    """The customer's current alerts (back in stock, price dropped, new for you), as the
    e-mail digest would hold them; ``emailed`` says whether one already went out by e-mail or
    file. None for an opted-out or forgotten customer."""
    from ..alerts import find_alerts

    user_id = check_id("user_id", user_id)
    if reason := personalisation_off(user_id):
        return jsonify({"user_id": user_id, "alerts": [], "personalized": False, "reason": reason})
    store = activity_store()
    found = find_alerts(
        store,
        current_app.extensions["recommender"].get(),
        current_app.extensions["recommender_alerts"],
        frozenset(),
        user_id=user_id,
    ).get(user_id, [])
    delivered = store.delivered_alerts(user_id)
    return jsonify(
        {
            "user_id": user_id,
            "personalized": True,
            "alerts": [
                {
                    **alert.to_dict(),
                    "emailed": (user_id, alert.item_id, alert.reason, alert.change_at) in delivered,
                }
                for alert in found
            ],
        }
    )


@bp.get("/<user_id>/wishlist")
def wishlist(user_id: str) -> Response:
    user_id = check_id("user_id", user_id)
    service = current_app.extensions["recommender"].get()
    items = []
    for item_id, added_at in activity_store().wishlist(user_id):
        entry = {"item_id": item_id, "added_at": added_at}
        item_idx = service.items.index(item_id, missing="none") if service else None
        if item_idx is not None:
            entry.update(name=service.names[item_idx], price=service.prices[item_idx])
        items.append(entry)
    return jsonify({"user_id": user_id, "items": items})


@bp.put("/<user_id>/wishlist/<item_id>")
def add_to_wishlist(user_id: str, item_id: str) -> tuple[Response, int]:
    """201 when added, 200 when it was already there."""
    user_id, item_id = check_id("user_id", user_id), check_id("item_id", item_id)
    if activity_store().suppression(user_id) == "forgotten":
        raise ApiError(
            409,
            "forgotten",
            "user_id: this customer asked to be forgotten; nothing is stored for this id",
        )
    # False too when a forget through another server commits in between: nothing is stored.
    created = activity_store().add_to_wishlist(user_id, item_id)
    return jsonify(
        {"user_id": user_id, "item_id": item_id, "added": created}
    ), 201 if created else 200


@bp.delete("/<user_id>/wishlist/<item_id>")
def remove_from_wishlist(user_id: str, item_id: str) -> tuple[str, int]:
    """204 whether or not it was there, so a retried request is harmless."""
    activity_store().remove_from_wishlist(
        check_id("user_id", user_id), check_id("item_id", item_id)
    )
    return "", 204


@bp.get("/<user_id>/wishlist/recommendations")
def wishlist_recommendations(user_id: str) -> Response:
    """What customers who wanted these items also bought; not the wish list, not past purchases."""
    user_id, k, chosen = check_id("user_id", user_id), k_param(), filters()
    shopper = shopper_state(user_id, wishlist=True)
    if reason := shopper.personalisation_off:
        return respond(
            {"user_id": user_id, **current_service().not_personal(user_id, k, chosen, reason)}
        )
    wished = [item_id for item_id, _ in shopper.wishlist]
    answering = arm(current_service(), user_id, suppression_checked=True)
    if (held := holdout(answering, k, chosen)) is not None:
        return respond({"user_id": user_id, "wishlist": wished, **held})
    response = answering.service.for_wishlist(user_id, wished, shopper.recent, k, chosen)
    return respond({"user_id": user_id, "wishlist": wished, **response})


@bp.get("/<user_id>/page-you-made")
def page_you_made(user_id: str) -> Response:
    """Recommendations from recent views, carts, wishes and purchases, grouped by what led to them."""
    user_id, k, chosen = check_id("user_id", user_id), k_param(), filters()
    shopper = shopper_state(user_id)
    if reason := shopper.personalisation_off:
        return respond(
            {
                "user_id": user_id,
                "groups": [],
                **current_service().not_personal(user_id, k, chosen, reason),
            }
        )
    answering = arm(current_service(), user_id, suppression_checked=True)
    if (held := holdout(answering, k, chosen)) is not None:
        return respond({"user_id": user_id, "groups": [], **held})
    response = answering.service.page_you_made(user_id, shopper.recent, k, chosen)
    name = current_app.extensions["recommender_customers"].names.get(user_id)
    greeting = {"greeting": f"Hello, {name}"} if name else {}
    return respond({"user_id": user_id, **greeting, **response, **shopper.activity})
