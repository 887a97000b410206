"""The Django admin for sessions: browse, filter and act on them at a million rows (SPEC §4).

Every derived value on a page (status, time remaining) comes from one clock
reading stored on the request, and so do the summary and the list's count: both
from one query on the counts (``sessions_admin.counts``), exact at that instant
whatever the number of sessions. Writes go through ``sessions_admin.services``;
the admin never saves a session form.
"""

import json
import logging
import math
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.exceptions import DisallowedModelAdminLookup
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import get_fields_from_path, quote
from django.contrib.admin.views.main import (
    ERROR_FLAG,
    ORDER_VAR,
    PAGE_VAR,
    SEARCH_VAR,
    ChangeList,
)
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.contenttypes.views import shortcut
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import EmptyPage, Paginator
from django.db import transaction
from django.db.models import Q
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import SimpleLazyObject, cached_property
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from sessions_admin import counts, policy, services
from sessions_admin.exceptions import SessionExpired, SessionNotFound, SessionRenewalFailed
from sessions_admin.models import Session, SessionQuerySet
from sessions_admin.throttling import SignInFailures

logger = logging.getLogger(__name__)

# Actions load the selected rows; beyond this many, use the API or prune_sessions.
ACTION_LIMIT = 1000
# The list never counts or pages past this many rows of a filtered result:
# deep OFFSETs and exact counts of large filtered sets cost a scan each.
LISTED_ROWS_LIMIT = 10_000

_NOW_ATTR = "sessions_admin_now"
_ROW_NOW_ATTR = "_admin_now"

# Why a selected session was not renewed, by the error its own renewal would raise.
RENEWAL_REFUSALS = {
    SessionExpired: "already expired",
    SessionRenewalFailed: "at the maximum duration",
    SessionNotFound: "deleted meanwhile",
}

STATUS_LABELS = {
    policy.STATUS_ACTIVE: "active",
    policy.STATUS_NEAR_EXPIRATION: "near expiration",
    policy.STATUS_EXPIRED: "expired",
}


def request_now(request) -> datetime:
    """Return the request's one clock reading, taking it on first use."""
    now = getattr(request, _NOW_ATTR, None)
    if now is None:
        now = policy.clock()
        setattr(request, _NOW_ATTR, now)
    return now


def _row_now(session: Session) -> datetime:
    # Rows are stamped with their page's instant; a row that was not (say,
    # rendered by a third-party view) reads the clock for itself.
    return getattr(session, _ROW_NOW_ATTR, None) or policy.clock()


def _format_instant(value: datetime) -> str:
    return format_html(
        '<time datetime="{}">{}</time>',
        policy.format_datetime(value),
        timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S"),
    )


@dataclass(frozen=True)
class SessionSummary:
    """Whole-store counts at one instant, with the shares the stacked bar draws."""

    now: datetime
    total: int
    active: int
    near_expiration: int
    expired: int

    @classmethod
    def of(cls, now: datetime, tally: counts.Tally) -> "SessionSummary":
        return cls(
            now=now,
            total=tally.total,
            active=tally.active,
            near_expiration=tally.near_expiration,
            expired=tally.expired,
        )

    @property
    def active_not_near(self) -> int:
        return self.active - self.near_expiration

    @property
    def cards(self) -> list[dict]:
        """The four counts shown above the bar, each linking to its status filter."""
        cards = [
            {"key": "total", "label": "Total", "count": self.total, "status": None},
            {"key": "active", "label": "Active", "count": self.active,
             "status": policy.STATUS_ACTIVE},
            {"key": "near_expiration", "label": "Near expiration", "count": self.near_expiration,
             "status": policy.STATUS_NEAR_EXPIRATION},
            {"key": "expired", "label": "Expired", "count": self.expired,
             "status": policy.STATUS_EXPIRED},
        ]
        for card in cards:
            card["display"] = f"{card['count']:,}"
        return cards

    def _percent(self, part: int) -> str:
        return f"{100 * part / self.total:.2f}" if self.total else "0"

    @property
    def segments(self) -> list[dict]:
        """The bar's segments, left to right: healthy, about to expire, expired."""
        parts = [
            ("active", "Active, not near expiration", self.active_not_near, policy.STATUS_ACTIVE),
            ("near", "Near expiration", self.near_expiration, policy.STATUS_NEAR_EXPIRATION),
            ("expired", "Expired", self.expired, policy.STATUS_EXPIRED),
        ]
        return [
            {
                "css": css,
                "label": label,
                "count": count,
                "display": f"{count:,}",
                "percent": self._percent(count),
                "status": status,
            }
            for css, label, count, status in parts
            if count
        ]


class SessionPaginator(Paginator):
    """A paginator that never reads a large result to count it, nor pages deep into it.

    ``exact_count`` gives the count when the counts can answer it (status,
    auto-renew and id search; see ``SessionAdmin.list_counts``). Otherwise (a
    creation-date range) at most ``count_limit + 1`` rows are counted, through
    an index when the filter has one. Paging stops at ``count_limit`` rows
    either way, so no page costs a deep ``OFFSET``.
    """

    def __init__(self, object_list, per_page, orphans=0, allow_empty_first_page=True, *,
                 count_limit: int = LISTED_ROWS_LIMIT,
                 exact_count: Callable[[], int | None] | None = None):
        super().__init__(object_list, per_page, orphans, allow_empty_first_page)
        self.count_limit = count_limit
        self.exact_count = exact_count
        self._counted_exactly = False

    @cached_property
    def count(self) -> int:
        exact = self.exact_count() if self.exact_count is not None else None
        if exact is not None:
            self._counted_exactly = True
            return exact
        return self.object_list.order_by()[: self.count_limit + 1].count()

    @property
    def count_is_exact(self) -> bool:
        return self.count <= self.count_limit or self._counted_exactly

    @cached_property
    def num_pages(self) -> int:
        return min(super().num_pages, max(1, self.count_limit // self.per_page))

    def validate_number(self, number):
        # A page past either end shows the nearest page (as ``get_page``
        # does), so the list keeps its filters instead of Django's reset to
        # ``?e=1``; ``SessionChangeList`` says so.
        try:
            return super().validate_number(number)
        except EmptyPage:
            return 1 if int(number) < 1 else max(1, self.num_pages)

    @property
    def pages_are_capped(self) -> bool:
        return self.count > self.num_pages * self.per_page

    @property
    def count_display(self) -> str:
        noun = "session" if self.count == 1 else "sessions"
        if self.count_is_exact:
            return f"{self.count:,} {noun}"
        return f"more than {self.count_limit:,} sessions"


class SessionChangeList(ChangeList):
    """The change list, stamped with the request's instant and ordered along an index."""

    def get_ordering(self, request, queryset):
        # Django sorts by any column ``?o=`` names, sortable or not; only the
        # columns in ``sortable_by`` have an index to sort along. The others
        # are dropped, and with none left the list keeps its default order.
        requested = self.params.get(ORDER_VAR)
        if requested:
            kept = [part for part in requested.split(".") if self._sortable(part)]
            if kept:
                self.params[ORDER_VAR] = ".".join(kept)
            else:
                del self.params[ORDER_VAR]
        if ORDER_VAR not in self.params and self._filtered_order is not None:
            return self._get_deterministic_ordering(list(self._filtered_order))
        return super().get_ordering(request, queryset)

    @property
    def _filtered_order(self) -> tuple[str, ...] | None:
        """The order a filter lists in unless a column is sorted, along the index it needs.

        In the default order (newest activity first) PostgreSQL walks the
        activity index and may pass most of the table before it finds rows
        of an older creation-date range (1.5 s against 1 ms at a million
        rows), or expired sessions and those about to expire, whose last
        activity is older than every other active session's. So a
        creation-date range lists the newest created first, expired sessions
        the most recently expired first, and sessions near expiration the
        soonest to expire first.
        """
        if any(name.startswith("created_at__") for name in self.params):
            return ("-created_at",)
        return {
            policy.STATUS_EXPIRED: ("-expires_at",),
            policy.STATUS_NEAR_EXPIRATION: ("expires_at",),
        }.get(self.params.get(StatusFilter.parameter_name))

    def _get_default_ordering(self):
        return self._filtered_order or super()._get_default_ordering()

    def _sortable(self, order_part: str) -> bool:
        try:
            field_name = self.list_display[int(order_part.rpartition("-")[2])]
        except (IndexError, ValueError):
            return False
        return self.sortable_by is None or field_name in self.sortable_by

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        if not self.search_form_class(request.GET).is_valid():
            # Django reports a search it cannot take (a NUL, say) and then
            # lists everything; a search that is not an id finds nothing here.
            return queryset.none()
        # The list never shows metadata, which may be 10 KB a row.
        return queryset.defer("metadata")

    def get_results(self, request):
        super().get_results(request)
        if self.multi_page and not (self.show_all and self.can_show_all):
            shown = self.paginator.validate_number(self.page_num)
            if shown != self.page_num:
                self.model_admin.message_user(
                    request,
                    f"There is no page {self.page_num:,} of this list; showing page {shown:,}.",
                    messages.WARNING,
                )
                self.page_num = shown
        now = request_now(request)
        rows = list(self.result_list)
        for session in rows:
            setattr(session, _ROW_NOW_ATTR, now)
        self.result_list = rows
        self.clear_search_query = self.get_query_string(remove=[SEARCH_VAR, PAGE_VAR])

    def _get_deterministic_ordering(self, ordering):
        # Break ties by id in the direction of the first sort key, so an
        # ordering such as ``expires_at`` walks the (expires_at, session_id)
        # index instead of sorting.
        ordering = super()._get_deterministic_ordering(ordering)
        first = ordering[0] if ordering else None
        if ordering[-1:] == ["-pk"] and isinstance(first, str) and not first.startswith("-"):
            ordering[-1] = "pk"
        return ordering


# The status filter's values, as conditions on the rows at an instant.
_STATUS_Q = {
    policy.STATUS_ACTIVE: SessionQuerySet.active_q,
    policy.STATUS_NEAR_EXPIRATION: SessionQuerySet.near_expiration_q,
    policy.STATUS_EXPIRED: SessionQuerySet.expired_q,
}


@dataclass(frozen=True)
class _ListedScope:
    """What the change list shows, as the counts can count it.

    ``scope`` is None when they cannot (a creation-date range), or when
    nothing can match (a search that is not an id: ``empty``). ``extra``
    holds the rows a search finds by user or session id, counted apart.
    """

    scope: counts.Scope | None
    status: str | None
    extra: dict
    empty: bool = False

    @classmethod
    def of(cls, request, now: datetime) -> "_ListedScope":
        params = request.GET
        status = params.get(StatusFilter.parameter_name)
        auto_renew = {"yes": True, "no": False}.get(params.get(AutoRenewFilter.parameter_name))
        if any(name.startswith("created_at__") for name in params):
            return cls(None, status, {})
        term = params.get(SEARCH_VAR, "").strip()
        if not term:
            return cls(counts.Scope(auto_renew=auto_renew), status, {})
        try:
            value = uuid.UUID(term)
        except ValueError:
            return cls(None, status, {}, empty=True)
        # The agent's sessions from the counts; those this id finds as a
        # user or a session id (and not as the agent), through their indexes.
        others = Session.objects.filter(Q(user_id=value) | Q(pk=value)).exclude(agent_id=value)
        if status in _STATUS_Q:
            others = others.filter(_STATUS_Q[status](now))
        if auto_renew is not None:
            others = others.filter(auto_renew=auto_renew)
        return cls(counts.Scope(agent_ids=(value,), auto_renew=auto_renew), status,
                   {"others": others})

    def count(self, tallies: dict, extra: dict) -> int | None:
        if self.empty:
            return 0
        if self.scope is None:
            return None
        agent = counts.EVERY_AGENT if self.scope.agent_ids is None else self.scope.agent_ids[0]
        tally = tallies.get(agent, counts.Tally(0, 0, 0))
        if self.status == policy.STATUS_NEAR_EXPIRATION:
            listed = tally.near_expiration
        else:
            listed = tally.matching(status=self.status)
        return listed + extra.get("others", 0)


class StatusFilter(admin.SimpleListFilter):
    """Active / near expiration / expired, by the request's one instant."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [
            (policy.STATUS_ACTIVE, "Active (incl. near expiration)"),
            (policy.STATUS_NEAR_EXPIRATION, "Near expiration"),
            (policy.STATUS_EXPIRED, "Expired"),
        ]

    def queryset(self, request, queryset):
        now = request_now(request)
        value = self.value()
        if value == policy.STATUS_ACTIVE:
            return queryset.active(now)
        if value == policy.STATUS_NEAR_EXPIRATION:
            return queryset.near_expiration(now)
        if value == policy.STATUS_EXPIRED:
            return queryset.expired(now)
        if value is not None:
            raise RefusedFilterValue(self.parameter_name, value, "is not a status")
        return queryset


class AutoRenewFilter(admin.SimpleListFilter):
    title = "auto-renew"
    parameter_name = "auto_renew"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(auto_renew=self.value() == "yes")
        if self.value() is not None:
            raise RefusedFilterValue(self.parameter_name, self.value(), "is not yes or no")
        return queryset


class CreationDateFilter(admin.DateFieldListFilter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.title = "creation date"

    def queryset(self, request, queryset):
        """Refuse a bound that is not an instant the database can compare (``RefusedFilterValue``).

        Django refuses text that is not a date only while building the query;
        a date at the edge of the calendar (9999-12-31 23:59-12:00) passes, and
        SQLite, converting it to UTC, overflows when the page is counted: a 500.
        """
        for name in (self.lookup_kwarg_since, self.lookup_kwarg_until):
            for value in self.used_parameters.get(name, ()):
                try:
                    instant = self.field.to_python(value)
                    if timezone.is_naive(instant):
                        instant = timezone.make_aware(instant)
                    instant.astimezone(UTC)
                except (ValidationError, ValueError, OverflowError):
                    raise RefusedFilterValue(name, value, "is not a date and time") from None
        return super().queryset(request, queryset)


class RefusedFilterValue(Exception):
    """A value a list filter cannot use, reported as a message rather than Django's ``?e=1``.

    Not an ``IncorrectLookupParameters``: Django answers those by redirecting
    to ``?e=1``, which drops every filter without a word. Raised from a
    filter's ``queryset``, it reaches ``OwnFiltersOnly.changelist_view``.
    """

    def __init__(self, parameter: str, value: str, reason: str):
        super().__init__(f"{parameter}={value}")
        self.parameter, self.value, self.reason = parameter, value, reason


# One app with one model: the navigation sidebar would only take width from the list.
admin.site.enable_nav_sidebar = False
admin.site.site_header = "Messaging sessions administration"
admin.site.site_title = "Sessions admin"
admin.site.index_title = "Messaging sessions"
# The service has no site of its own for "View site" to lead to.
admin.site.site_url = None


def throttled_login(request, extra_context=None):
    """The admin's sign-in page, with failed attempts limited per address (``SignInFailures``).

    Each attempt costs a password hash. Once an address has used up
    ``SESSIONS_AUTH_FAILURE_RATE`` (shared with HTTP Basic on the API), its
    sign-ins answer 429 with ``Retry-After``, without checking the password,
    until the window ends.
    """
    if request.method != "POST":
        return admin.site.login(request, extra_context)
    failures = SignInFailures(request)
    wait = failures.wait()
    if wait is not None:
        seconds = max(1, math.ceil(wait))
        response = TemplateResponse(
            request,
            "admin/sessions_admin/login_throttled.html",
            {**admin.site.each_context(request), "title": "Sign-in paused", "seconds": seconds},
            status=429,
        )
        response["Retry-After"] = str(seconds)
        return response
    response = admin.site.login(request, extra_context)
    if response.status_code == 200:  # the form came back with an error
        failures.record()
    return response


@admin.site.admin_view
def view_on_site(request, content_type_id, object_id):
    """Django's "view on site" redirect, with a 404 for an id its model cannot hold.

    Django's own lets the id reach the query: text that is not a UUID raises
    ``ValidationError`` on a UUID key, and NUL in a text key is refused by
    PostgreSQL; both were 500s.
    """
    if "\x00" in object_id:
        raise Http404("No object has that id.")
    try:
        return shortcut(request, content_type_id, object_id)
    except ValidationError:
        raise Http404("No object has that id.") from None


class FindNothingForNul:
    """A search term holding NUL finds nothing, instead of reaching PostgreSQL (a 500).

    The change list's search form refuses such a term itself; the
    autocomplete of a relation's select box hands it straight to
    ``get_search_results``.
    """

    def get_search_results(self, request, queryset, search_term):
        if "\x00" in search_term:
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)


class RefuseMalformedSelection:
    """Refuse an action whose selected ids are not ids of the model, instead of a 500.

    Django's ``response_action`` filters ``pk__in`` on the posted values, and a
    tampered form can post anything: a UUID or integer primary key then raises
    while the query is built.
    """

    def response_action(self, request, queryset):
        pk = self.model._meta.pk
        for value in request.POST.getlist(ACTION_CHECKBOX_NAME):
            try:
                pk.to_python(value)
            except ValidationError:
                self.message_user(
                    request,
                    f"“{value[:100]}” is not the id of a {self.opts.verbose_name}; "
                    "nothing was changed.",
                    messages.ERROR,
                )
                return HttpResponseRedirect(request.get_full_path())
        return super().response_action(request, queryset)


class OwnFiltersOnly:
    """Accept in a change list's query string only the parameters of its own filters.

    Django lets the query string filter on any field of the model with any
    lookup (``?metadata__regex=(``, ``?username__regex=(``): the database then
    raises (a 500), or scans the whole table on an unindexed column. Any other
    parameter is refused with a message, and the list is shown unfiltered.
    """

    def lookup_allowed(self, lookup, value, request=None):
        if lookup in self._filter_parameters(request):
            return True
        if request is not None:
            request._sessions_admin_refused_lookup = lookup
        return False

    def _filter_parameters(self, request) -> set[str]:
        parameters = getattr(request, "_sessions_admin_filter_parameters", None)
        if parameters is not None:
            return parameters
        parameters = set()
        for item in self.get_list_filter(request):
            if isinstance(item, type) and issubclass(item, admin.SimpleListFilter):
                parameters.add(item.parameter_name)
                continue
            field_path, filter_class = (
                item if isinstance(item, (list, tuple)) else (item, admin.FieldListFilter.create)
            )
            field = get_fields_from_path(self.model, field_path)[-1]
            spec = filter_class(field, request, {}, self.model, self, field_path=field_path)
            parameters.update(spec.expected_parameters())
        if request is not None:
            request._sessions_admin_filter_parameters = parameters
        return parameters

    def changelist_view(self, request, extra_context=None):
        try:
            return super().changelist_view(request, extra_context)
        except DisallowedModelAdminLookup:
            refused = getattr(request, "_sessions_admin_refused_lookup", "")
            self.message_user(
                request,
                f"“{refused[:100]}” is not one of this list's filters; "
                f"showing all {self.opts.verbose_name_plural}.",
                messages.ERROR,
            )
            return HttpResponseRedirect(request.path)
        except RefusedFilterValue as refused:
            self.message_user(
                request,
                f"“{refused.value[:100]}” {refused.reason}; showing the list without that filter.",
                messages.ERROR,
            )
            kept = request.GET.copy()
            kept.pop(refused.parameter, None)
            kept.pop(ERROR_FLAG, None)
            return HttpResponseRedirect(f"{request.path}?{kept.urlencode()}" if kept else request.path)


# What every admin of this site guards against: any lookup in the query
# string, ids that are not ids, NUL in a search.
ADMIN_GUARDS = (OwnFiltersOnly, RefuseMalformedSelection, FindNothingForNul)

# django.contrib.auth's admins (users, groups), with the same guards.
for _model in (get_user_model(), Group):
    if admin.site.is_registered(_model):
        _registered = type(admin.site.get_model_admin(_model))
        admin.site.unregister(_model)
        admin.site.register(_model, type(_registered.__name__, (*ADMIN_GUARDS, _registered), {}))


@admin.register(Session)
class SessionAdmin(*ADMIN_GUARDS, admin.ModelAdmin):
    """Sessions, read-only except through the actions (which call the services)."""

    list_display = (
        "session_link",
        "agent_link",
        "user_link",
        "status_badge",
        "expires_at_display",
        "time_remaining",
        "renewal_count",
        "last_activity_display",
        "auto_renew",
    )
    list_display_links = ("session_link",)
    # Only columns an index can order by (see Session.Meta.indexes).
    sortable_by = ("session_link", "expires_at_display", "time_remaining", "last_activity_display")
    list_filter = (
        StatusFilter,
        AutoRenewFilter,
        ("created_at", CreationDateFilter),
    )
    list_select_related = ("timeout_config",)
    list_per_page = 100
    ordering = ("-last_activity",)
    # Present so the search box shows; get_search_results does the matching.
    search_fields = ("session_id", "agent_id", "user_id")
    search_help_text = "Exact session, agent or user id (a UUID)."
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = SessionPaginator
    actions = ("renew_selected", "expire_selected", "delete_selected")
    change_list_template = "admin/sessions_admin/session/change_list.html"
    change_form_template = "admin/sessions_admin/session/change_form.html"

    fieldsets = (
        (
            None,
            {
                "fields": (
                    "session_id",
                    ("agent_id", "user_id"),
                    "status_badge",
                    "time_remaining",
                    ("created_at_display", "last_activity_display"),
                    ("expires_at_display", "cap_display"),
                    "renewal_count",
                )
            },
        ),
        (
            "Timeout configuration",
            {
                "fields": (
                    ("timeout_minutes", "auto_renew"),
                    ("max_duration_minutes", "warning_threshold_minutes"),
                )
            },
        ),
        ("Metadata", {"fields": ("metadata_display",)}),
    )
    readonly_fields = (
        "session_id",
        "agent_id",
        "user_id",
        "status_badge",
        "time_remaining",
        "created_at_display",
        "last_activity_display",
        "expires_at_display",
        "cap_display",
        "renewal_count",
        "timeout_minutes",
        "auto_renew",
        "max_duration_minutes",
        "warning_threshold_minutes",
        "metadata_display",
    )

    class Media:
        css = {"all": ("sessions_admin/admin.css",)}

    # -- Permissions: sessions are created by clients and changed only by services.

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # The session page is read-only (saving a form would overwrite
        # concurrent heartbeats); the list's actions need the model permission.
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def _may_operate(self, request) -> bool:
        return super().has_change_permission(request)

    # -- Queries.

    def get_queryset(self, request):
        # The change list orders the rows itself (``ordering`` or the clicked
        # column); without this, the default order would trail every explicit
        # one and no index could serve it.
        return super().get_queryset(request).select_related("timeout_config").order_by()

    def get_object(self, request, object_id, from_field=None):
        session = super().get_object(request, object_id, from_field)
        if session is not None:
            setattr(session, _ROW_NOW_ATTR, request_now(request))
        return session

    def get_changelist(self, request, **kwargs):
        return SessionChangeList

    def get_search_results(self, request, queryset, search_term):
        """Match one exact session, agent or user id; anything else matches nothing."""
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            value = uuid.UUID(term)
        except ValueError:
            # Said once, on the page that lists (an action's POST searches
            # too, and then redirects back to that page).
            if request.method == "GET" and not getattr(request, "_sessions_admin_search_refused", False):
                request._sessions_admin_search_refused = True
                self.message_user(
                    request,
                    f"“{term[:100]}” is not a session, agent or user id: search takes one exact "
                    "id (a UUID).",
                    messages.WARNING,
                )
            return queryset.none(), False
        return queryset.filter(Q(pk=value) | Q(agent_id=value) | Q(user_id=value)), False

    def list_counts(self, request) -> tuple[SessionSummary, int | None]:
        """The summary and the count of the listed sessions, from one query, once per request.

        The count is ``None`` when only the rows can tell it: with a
        creation-date range. Status and auto-renew filters are read from the
        counts, and so is a search for an agent; the sessions a search finds
        by user or session id (few) are counted through their indexes.
        """
        cached = getattr(request, "_sessions_admin_counts", None)
        if cached is not None:
            return cached
        now = request_now(request)
        listing = _ListedScope.of(request, now)
        scopes = [counts.Scope()]
        if listing.scope is not None:
            scopes.append(listing.scope)
        # The summary shows near expiration; the list needs it for that filter only.
        near = {counts.Scope()}
        if listing.status == policy.STATUS_NEAR_EXPIRATION and listing.scope is not None:
            near.add(listing.scope)
        tallies, extra = counts.session_tallies(
            now=now, scopes=scopes, near_expiration=near, extra=listing.extra
        )
        summary = SessionSummary.of(now, tallies[0][counts.EVERY_AGENT])
        listed = listing.count(tallies[-1], extra)
        request._sessions_admin_counts = (summary, listed)
        return summary, listed

    def _summary(self, request) -> SessionSummary:
        return self.list_counts(request)[0]

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        return self.paginator(
            queryset, per_page, orphans, allow_empty_first_page, count_limit=LISTED_ROWS_LIMIT,
            exact_count=lambda: self.list_counts(request)[1],
        )

    def changelist_view(self, request, extra_context=None):
        request_now(request)
        extra_context = {
            **(extra_context or {}),
            "title": "Sessions",
            "session_summary": SimpleLazyObject(lambda: self._summary(request)),
            "status_parameter": StatusFilter.parameter_name,
            "action_limit": ACTION_LIMIT,
            "action_limit_display": f"{ACTION_LIMIT:,}",
            "current_status": request.GET.get(StatusFilter.parameter_name),
        }
        return super().changelist_view(request, extra_context)

    # -- Columns and read-only fields. Each reads the row's page instant.

    # Ids are shortened in the list (the full id is the tooltip, the link's
    # target and on the session page): three full UUIDs would push the timing
    # columns off a laptop screen.

    def action_checkbox(self, session):
        # Django's own renders a form widget through the template engine, a
        # quarter of the list's rendering time; this is the same markup, directly.
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" '
            'aria-label="Select this object for an action - {}">',
            ACTION_CHECKBOX_NAME, session.pk, session,
        )

    @admin.display(description="session id", ordering="session_id")
    def session_link(self, session):
        return format_html(
            '<span class="session-id" title="Session {}">{}…</span>',
            session.session_id, str(session.session_id)[:8],
        )

    @admin.display(description="agent")
    def agent_link(self, session):
        return self._id_search_link(session.agent_id, "Sessions of this agent")

    @admin.display(description="user")
    def user_link(self, session):
        return self._id_search_link(session.user_id, "Sessions of this user")

    @cached_property
    def _changelist_url(self) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")

    def _id_search_link(self, value, title):
        return format_html(
            '<a class="session-id" href="{}?{}={}" title="{}: {}">{}…</a>',
            self._changelist_url, SEARCH_VAR, value, title, value, str(value)[:8],
        )

    @admin.display(description="status")
    def status_badge(self, session):
        status = session.status(now=_row_now(session))
        return format_html(
            '<span class="session-status session-status--{}">{}</span>',
            status.replace("_", "-"),
            STATUS_LABELS[status],
        )

    @admin.display(description="time remaining", ordering="expires_at")
    def time_remaining(self, session):
        remaining_ms = session.time_remaining_ms(now=_row_now(session))
        if remaining_ms == 0:
            return self.get_empty_value_display()
        return policy.humanize_ms(remaining_ms)

    @admin.display(description="expires at", ordering="expires_at")
    def expires_at_display(self, session):
        return _format_instant(session.expires_at)

    @admin.display(description="last activity", ordering="last_activity")
    def last_activity_display(self, session):
        return _format_instant(session.last_activity)

    @admin.display(description="created at")
    def created_at_display(self, session):
        return _format_instant(session.created_at)

    @admin.display(description="maximum end (cap)")
    def cap_display(self, session):
        return _format_instant(policy.cap_for(session.created_at, session.timeout))

    @admin.display(description="auto-renew", boolean=True)
    def auto_renew(self, session):
        return session.timeout_config.auto_renew

    @admin.display(description="timeout")
    def timeout_minutes(self, session):
        return f"{session.timeout_config.timeout_minutes} min"

    @admin.display(description="maximum duration")
    def max_duration_minutes(self, session):
        return f"{session.timeout_config.max_duration_minutes} min"

    @admin.display(description="warning threshold")
    def warning_threshold_minutes(self, session):
        return f"{session.timeout_config.warning_threshold_minutes} min"

    @admin.display(description="metadata")
    def metadata_display(self, session):
        return format_html(
            '<pre class="session-metadata">{}</pre>',
            json.dumps(session.metadata, indent=2, sort_keys=True, ensure_ascii=False),
        )

    # -- Actions. Each loads at most ACTION_LIMIT rows, calls the services,
    #    reports how many rows changed and writes the admin log.

    def _selected_sessions(self, request, queryset) -> list[Session] | None:
        sessions = list(queryset.order_by()[: ACTION_LIMIT + 1])
        if len(sessions) > ACTION_LIMIT:
            self.message_user(
                request,
                f"More than {ACTION_LIMIT:,} sessions are selected; nothing was changed. "
                "Narrow the list with filters or a search, or use the API or prune_sessions "
                "for bulk work.",
                messages.ERROR,
            )
            return None
        return sessions

    @staticmethod
    def _log_changes(request, sessions, message: str) -> None:
        # Called in the change's transaction: the two commit together.
        if sessions:
            LogEntry.objects.log_actions(
                user_id=request.user.pk, queryset=sessions, action_flag=CHANGE,
                change_message=message,
            )

    @staticmethod
    def _sessions_phrase(count: int) -> str:
        return f"{count:,} session" if count == 1 else f"{count:,} sessions"

    @admin.action(description="Renew selected sessions", permissions=["change"])
    def renew_selected(self, request, queryset):
        sessions = self._selected_sessions(request, queryset)
        if sessions is None:
            return
        renewed, refused = self._renew(request, [s.pk for s in sessions])
        self._report_renewals(request, renewed, refused)

    def _renew(self, request, session_ids) -> tuple[list[Session], Counter]:
        # The API's renewal rule for each row, in one transaction for the
        # whole selection; the log names exactly the sessions that were extended.
        with transaction.atomic():
            renewed, refused, _ = services.session_renew_many(session_ids=session_ids)
            self._log_changes(request, renewed, "Renewed from the admin.")
        reasons = {RENEWAL_REFUSALS[error]: count for error, count in refused.items()}
        return renewed, Counter(reasons)

    def _report_renewals(self, request, renewed, refused) -> None:
        if not renewed and not refused:
            self.message_user(request, "No session was renewed.", messages.WARNING)
        if renewed:
            self.message_user(
                request, f"Renewed {self._sessions_phrase(len(renewed))}.", messages.SUCCESS
            )
        if refused:
            reasons = ", ".join(f"{count:,} {reason}" for reason, count in sorted(refused.items()))
            self.message_user(
                request,
                f"{self._sessions_phrase(sum(refused.values()))} could not be renewed ({reasons}).",
                messages.WARNING,
            )

    @admin.action(description="Expire selected sessions now", permissions=["change"])
    def expire_selected(self, request, queryset):
        sessions = self._selected_sessions(request, queryset)
        if sessions is None:
            return
        self._expire(request, sessions)

    def _expire(self, request, sessions) -> None:
        with transaction.atomic():
            ended, already_expired, now = services.session_expire_now(
                session_ids=[s.pk for s in sessions]
            )
            self._log_changes(request, ended, f"Expired now ({policy.format_datetime(now)}).")
        level = messages.SUCCESS if ended else messages.WARNING
        message = f"Expired {self._sessions_phrase(len(ended))}."
        if already_expired:
            message += f" {self._sessions_phrase(already_expired)} already expired."
        deleted = len(sessions) - len(ended) - already_expired
        if deleted:
            message += f" {self._sessions_phrase(deleted)} deleted meanwhile."
        self.message_user(request, message, level)

    @admin.action(description="Delete selected sessions", permissions=["delete"])
    def delete_selected(self, request, queryset):
        sessions = self._selected_sessions(request, queryset)
        if sessions is None:
            return None
        if not request.POST.get("post"):
            # Django's confirmation page; it posts back the selected ids.
            return django_delete_selected(self, request, queryset.filter(pk__in=[s.pk for s in sessions]))
        self.log_deletions(request, sessions)
        deleted = services.session_delete_many(session_ids=[s.pk for s in sessions])
        if not deleted:  # a second submit of the confirmation, say
            self.message_user(request, "No session was deleted.", messages.WARNING)
            return None
        self.message_user(request, f"Deleted {self._sessions_phrase(deleted)}.", messages.SUCCESS)
        return None

    def response_delete(self, request, obj_display, obj_id):
        response = super().response_delete(request, obj_display, obj_id)
        if self.has_view_permission(request) and not self.has_change_permission(request):
            # Django sends whoever may not change sessions to the admin index,
            # though they may still list them: back to the list instead.
            return self._redirect_keeping_filters(request, self._changelist_url)
        return response

    def _redirect_keeping_filters(self, request, url):
        """Redirect to ``url`` with the list's filters the request carries."""
        context = {"preserved_filters": self.get_preserved_filters(request), "opts": self.opts}
        return HttpResponseRedirect(add_preserved_filters(context, url))

    def delete_model(self, request, obj):
        try:
            services.session_delete(session_id=obj.pk)
        except SessionNotFound:
            pass

    def delete_queryset(self, request, queryset):
        services.session_delete_many(session_ids=queryset.values_list("pk", flat=True))

    # -- The session page's own buttons: renew or expire this session.

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(require_POST(view))

        info = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("<path:object_id>/renew/", wrap(self.renew_view), name=f"{info}_renew"),
            path("<path:object_id>/expire/", wrap(self.expire_view), name=f"{info}_expire"),
            *super().get_urls(),
        ]

    def _operated_session(self, request, object_id) -> Session:
        if not self._may_operate(request):
            raise PermissionDenied
        session = self.get_object(request, object_id)
        if session is None:
            raise Http404("No session with that id.")
        return session

    def _back_to(self, request, session):
        url = reverse("admin:sessions_admin_session_change", args=[quote(session.pk)])
        return self._redirect_keeping_filters(request, url)

    def renew_view(self, request, object_id):
        session = self._operated_session(request, object_id)
        renewed, refused = self._renew(request, [session.pk])
        self._report_renewals(request, renewed, refused)
        return self._back_to(request, session)

    def expire_view(self, request, object_id):
        session = self._operated_session(request, object_id)
        self._expire(request, [session])
        return self._back_to(request, session)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["session_is_active"] = not policy.is_expired(
                obj.expires_at, now=request_now(request)
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "may_operate": self._may_operate(request),
            # The model's __str__ names agent and user too: too long for a heading.
            "subtitle": f"Session {object_id}",
        }
        return super().change_view(request, object_id, form_url, extra_context)

