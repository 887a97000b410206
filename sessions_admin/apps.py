from django.apps import AppConfig


class SessionsAdminConfig(AppConfig):
    name = "sessions_admin"
    verbose_name = "Messaging sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from sessions_admin import (
            checks,  # noqa: F401  (registers system checks)
            db,
        )

        db.install()
