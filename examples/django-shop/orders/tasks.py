"""The orders app's tasks, found by ``celeriac.contrib.django.setup`` in INSTALLED_APPS.

``@shared_task`` keeps the app free of the project: the task runs in the current app,
the one ``shopsite/celeriac.py`` creates.
"""

from django.utils import timezone

from celeriac import shared_task
from orders.models import Order


@shared_task
def process_order(order_id: int) -> dict[str, object]:
    """Mark an order processed; the view sends this only once the order is committed."""
    order = Order.objects.get(pk=order_id)
    order.status = Order.PROCESSED
    order.processed_at = timezone.now()
    order.save(update_fields=["status", "processed_at"])
    return {"order_id": order.pk, "status": order.status, "total_cents": order.total_cents}
