"""relay.identity.sessions: whether a Django session still logs its user in, as ``get_user`` decides."""

from importlib import import_module

import pytest
from django.conf import settings as django_settings
from django.test import Client

from relay.identity.sessions import session_logs_in, user_key

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", password="a-Passphrase-4711")


def logged_in(user) -> str:
    browser = Client()
    browser.force_login(user)
    return browser.cookies[django_settings.SESSION_COOKIE_NAME].value


def test_a_logged_in_session_logs_its_user_in(user):
    assert session_logs_in(logged_in(user), user_key(user))
    assert session_logs_in(logged_in(user), None)  # None: whoever it is


def test_a_session_that_is_gone_logs_no_one_in(user):
    session_key = logged_in(user)
    import_module(django_settings.SESSION_ENGINE).SessionStore(session_key).delete()
    assert not session_logs_in(session_key, user_key(user))
    assert not session_logs_in("no-such-session-key-0123456789ab", None)


def test_a_session_of_another_user_does_not_log_this_one_in(user, django_user_model):
    bob = django_user_model.objects.create_user("bob")
    assert not session_logs_in(logged_in(bob), user_key(user))


def test_a_password_change_ends_the_session_and_it_is_left_as_it_was(user):
    session_key = logged_in(user)
    user.set_password("a-new-Passphrase-0815")
    user.save()
    assert not session_logs_in(session_key, user_key(user))
    # Unlike get_user, which flushes a session it refuses, the check changes nothing.
    assert import_module(django_settings.SESSION_ENGINE).SessionStore(session_key).exists(session_key)


def test_a_hash_made_with_a_fallback_secret_still_logs_in(user, settings):
    session_key = logged_in(user)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-rotated-secret-key-0123456789-0123456789-0123456789"
    assert session_logs_in(session_key, user_key(user))


def test_an_inactive_user_is_logged_in_by_no_session(user):
    session_key = logged_in(user)
    user.is_active = False
    user.save()
    assert not session_logs_in(session_key, user_key(user))


def test_a_session_without_a_django_login_is_judged_by_its_existence_only():
    session = import_module(django_settings.SESSION_ENGINE).SessionStore()
    session["ticket_user"] = "alice"  # a site's own backend's
    session.save()
    assert session_logs_in(session.session_key, None)


def test_user_key_is_how_the_session_names_the_user(user):
    assert user_key(user) == str(user.pk)
    assert user_key(None) is None
