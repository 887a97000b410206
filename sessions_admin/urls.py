"""Routes under ``/api/messaging`` (elizaOS paths: no trailing slashes)."""

from django.urls import path

from sessions_admin import views

app_name = "sessions_admin"

urlpatterns = [
    path("sessions", views.SessionCollectionView.as_view(), name="session-list"),
    # Before sessions/<sessionId>, which would otherwise take "health" for an id.
    path("sessions/health", views.HealthView.as_view(), name="session-health"),
    path("sessions/<str:sessionId>", views.SessionDetailView.as_view(), name="session-detail"),
    path(
        "sessions/<str:sessionId>/heartbeat",
        views.SessionHeartbeatView.as_view(),
        name="session-heartbeat",
    ),
    path("sessions/<str:sessionId>/renew", views.SessionRenewView.as_view(), name="session-renew"),
    path(
        "sessions/<str:sessionId>/timeout",
        views.SessionTimeoutView.as_view(),
        name="session-timeout",
    ),
]
