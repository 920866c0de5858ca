from django.contrib import admin
from django.urls import path

from api.views import api
from orchestration.observability.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("api/", api.urls),
]
