"""The app alone: with only "relay" installed, no models, no HTTP API; the contrib apps add theirs."""

import os
import subprocess
import sys
from pathlib import Path

from django.apps import apps
from django.urls import reverse

REPO = Path(__file__).resolve().parents[1]

MINIMAL_SITE_SCRIPT = """
import io
import django
django.setup()
from django.apps import apps
from django.urls import get_resolver
from django.test import Client
from django.core.management import call_command
call_command("check", fail_level="WARNING", stdout=io.StringIO())
call_command("migrate", verbosity=0)
relay_models = [m for m in apps.get_models() if m.__module__.startswith("relay")]
client = Client()
statuses = [client.get(path, HTTP_HOST="localhost").status_code for path in ("/relay/api/send", "/relay/healthz")]
print(len(relay_models), *statuses)
"""


def test_only_relay_installed_has_no_models_and_no_http_api():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.minimal_settings"}
    result = subprocess.run(
        [sys.executable, "-c", MINIMAL_SITE_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "404", "200"]


def test_the_contrib_apps_bring_their_models_and_endpoints():
    assert apps.get_model("relay_http_api", "ApiKey")._meta.db_table == "relay_http_api_apikey"
    assert apps.get_model("relay_admin", "AuditEntry")._meta.db_table == "relay_admin_auditentry"
    assert reverse("relay:api-send") == "/relay/api/send"
