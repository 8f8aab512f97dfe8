"""The site's own pages (the admin and the API have theirs): the landing page at ``/``."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from django.views.generic import TemplateView


class HomeView(TemplateView):
    """What VCCI is and where to go: the admin, the API documentation and schema, the health endpoints."""

    template_name = "emissions/home.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "inventory": reverse("report-inventory")}
