from django.urls import path

from sessions_admin import views

app_name = "sessions_admin"

urlpatterns = [
    path("sessions", views.SessionCollectionView.as_view(), name="session-list"),
    path("sessions/health", views.HealthView.as_view(), name="session-health"),
]
