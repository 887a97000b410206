"""factory-boy factories for sessions."""

import uuid
from datetime import timedelta

import factory
from django.utils import timezone

from sessions_admin import policy
from sessions_admin.models import Session, TimeoutConfig


class TimeoutConfigFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TimeoutConfig
        django_get_or_create = (
            "timeout_minutes",
            "auto_renew",
            "max_duration_minutes",
            "warning_threshold_minutes",
        )

    timeout_minutes = 30
    auto_renew = True
    max_duration_minutes = 720
    warning_threshold_minutes = 5


class SessionFactory(factory.django.DjangoModelFactory):
    """A session created at ``created_at`` with the expiry the timing rules give.

    Traits: ``expired`` (expired one minute before ``now``), ``near_expiration``
    (two minutes left at ``now``). Pass ``now`` to anchor the traits.
    """

    class Meta:
        model = Session
        exclude = ("now",)

    class Params:
        now = factory.LazyFunction(timezone.now)
        expired = factory.Trait(
            created_at=factory.LazyAttribute(lambda o: o.now - timedelta(minutes=31)),
            expires_at=factory.LazyAttribute(lambda o: o.now - timedelta(minutes=1)),
        )
        near_expiration = factory.Trait(
            created_at=factory.LazyAttribute(lambda o: o.now - timedelta(minutes=28)),
            expires_at=factory.LazyAttribute(lambda o: o.now + timedelta(minutes=2)),
        )

    session_id = factory.LazyFunction(uuid.uuid4)
    agent_id = factory.LazyFunction(uuid.uuid4)
    user_id = factory.LazyFunction(uuid.uuid4)
    metadata = factory.LazyFunction(dict)
    timeout_config = factory.SubFactory(TimeoutConfigFactory)
    created_at = factory.LazyAttribute(lambda o: o.now)
    last_activity = factory.LazyAttribute(lambda o: o.created_at)
    expires_at = factory.LazyAttribute(
        lambda o: policy.expiry_for(o.created_at, o.timeout_config.as_timeout(), now=o.last_activity)
    )
    renewal_count = 0
