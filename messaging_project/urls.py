"""URL configuration: the admin site, the messaging API and its OpenAPI schema."""

from django.contrib import admin
from django.urls import include, path
from django.views import View
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from sessions_admin.admin import throttled_login, view_on_site
from sessions_admin.throttling import ThrottleBeforePermissions


class SchemaView(ThrottleBeforePermissions, SpectacularAPIView):
    def _get_version_parameter(self, request):
        # The API has one version, so ``?version=`` is ignored: drf-spectacular
        # copies it into the Content-Disposition header, where a control
        # character (NUL, DEL, a line break, U+2028) made the answer a 500.
        return None


class DocsView(ThrottleBeforePermissions, SpectacularSwaggerView):
    def options(self, request, *args, **kwargs):
        # An HTML page: DRF would describe it as an API (metadata) through the
        # page's HTML renderer, which has no template for that (a 500). Answer
        # as any Django view does: 200, ``Allow``, no body.
        return View.options(self, request, *args, **kwargs)


urlpatterns = [
    # The admin's own sign-in page, with failed attempts limited per address.
    path("admin/login/", throttled_login),
    path("admin/r/<path:content_type_id>/<path:object_id>/", view_on_site),
    path("admin/", admin.site.urls),
    path("api/messaging/", include("sessions_admin.urls")),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/docs/", DocsView.as_view(url_name="schema"), name="api-docs"),
]
