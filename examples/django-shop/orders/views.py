"""Taking orders: the row and the task that processes it commit together, or neither does."""

import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from orders.models import Order
from orders.tasks import process_order


class CardDeclinedError(Exception):
    """The card was refused: the order must not exist, nor its task run."""


def charge(card: str, total_cents: int) -> None:
    """A stand-in for a payment provider: the card "declined" is refused."""
    if card == "declined":
        raise CardDeclinedError(f"card refused for {total_cents} cents")


def _read_order(request: HttpRequest) -> tuple[str, int, str]:
    data = json.loads(request.body or b"{}")
    email, total, card = data.get("email"), data.get("total_cents"), data.get("card", "ok")
    if not isinstance(email, str) or "@" not in email:
        raise ValueError("email: an address is required")
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise ValueError("total_cents: a whole number above 0 is required")
    return email, total, str(card)


@csrf_exempt  # a JSON API for the example; a real shop authenticates its callers
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    """POST {"email", "total_cents", "card"}: save the order, charge, process it later."""
    try:
        email, total, card = _read_order(request)
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    try:
        with transaction.atomic():
            order = Order.objects.create(email=email, total_cents=total)
            # Sent when the transaction commits: the worker always finds the row.
            result = process_order.delay_on_commit(order.pk)
            charge(card, total)  # a refusal rolls the order back, and nothing is sent
    except CardDeclinedError as exc:
        return JsonResponse({"error": str(exc)}, status=402)
    return JsonResponse({"order_id": order.pk, "task_id": result.id}, status=202)


@require_GET
def order_detail(request: HttpRequest, order_id: int) -> JsonResponse:
    """GET: an order's status."""
    try:
        order = Order.objects.get(pk=order_id)
    except Order.DoesNotExist:
        return JsonResponse({"error": f"no order {order_id}"}, status=404)
    return JsonResponse({"order_id": order.pk, "status": order.status})
