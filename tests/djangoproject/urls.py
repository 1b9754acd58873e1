from __future__ import annotations

from django.urls import path, re_path

from . import views

urlpatterns = [
    path("hello", views.hello),
    path("api/other/backchannel/authentication/fail/extra", views.near_miss),
    path("stream", views.stream),
    path("reject", views.reject),
    path("areject", views.areject),
    path("issue", views.issue),
    path("fail-json", views.fail_json),
    path("aissue", views.aissue),
    path("afail-json", views.afail_json),
    path("echo", views.echo),
    re_path(r"^", views.echo),
]
