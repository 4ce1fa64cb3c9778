"""An order: written by the web view, processed by a task."""

from django.db import models


class Order(models.Model):
    """One order; ``status`` goes from "new" to "processed" when its task has run."""

    NEW = "new"
    PROCESSED = "processed"

    email = models.EmailField()
    total_cents = models.PositiveIntegerField()
    status = models.CharField(max_length=20, default=NEW)
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"order {self.pk} ({self.status})"
