"""The demo's page and tokens (RELAY_DEMO): who may see them, what they hand out."""

import json

import pytest
from django.contrib.auth import get_user_model

from relay.identity.tokens import client_id_from_token


@pytest.fixture
def demo_on(settings):
    settings.RELAY_DEMO = True
    settings.DEBUG = True
    return settings


def config_of(response) -> dict:
    """The demo's configuration, as the page hands it to demo.js."""
    return json.loads(response.content.decode().split('type="application/json">')[1].split("</script>")[0])


def test_the_page_has_a_panel_per_name_and_uses_relay_js(client, demo_on):
    response = client.get("/relay/demo/?names=carol,dave")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'from "/static/relay/relay.js"' in html and 'from "/static/relay/demo.js"' in html
    assert config_of(response) == {
        "names": ["carol", "dave"],
        "prefix": "demo-",
        "tokenUrl": "/relay/demo/token",
        "room": "demo",
    }
    assert config_of(client.get("/relay/demo/"))["names"] == ["alice", "bob"]


def test_the_relay_site_serves_it_at_the_root(client, demo_on):
    response = client.get("/")
    assert (response.status_code, response.templates[0].name) == (200, "relay/demo.html")


@pytest.mark.parametrize("names", ["Alice", "a,b,c,d,e", "a b", ",", "x" * 21])
def test_bad_names_are_404(client, demo_on, names):
    assert client.get("/relay/demo/", {"names": names}).status_code == 404


def test_a_token_is_for_the_demo_id_of_the_name(client, demo_on):
    response = client.get("/relay/demo/token", {"name": "alice"})
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    body = response.json()
    assert body["client_id"] == "demo-alice"
    assert client_id_from_token(body["token"]) == "demo-alice"
    for bad in ("", "Alice", "a,b", "demo-alice"):
        assert client.get("/relay/demo/token", {"name": bad}).status_code == 404


def test_off_is_404_everywhere(client, settings):
    settings.RELAY_DEMO = False
    settings.DEBUG = True
    assert [client.get(path).status_code for path in ("/", "/relay/demo/", "/relay/demo/token?name=a")] == [404] * 3


@pytest.mark.django_db
def test_with_debug_off_it_is_for_staff_only(client, settings):
    settings.RELAY_DEMO = True
    settings.DEBUG = False
    assert client.get("/relay/demo/").status_code == 403
    assert client.get("/relay/demo/token", {"name": "alice"}).status_code == 403
    user = get_user_model().objects.create_user("someone")
    client.force_login(user)
    assert client.get("/relay/demo/").status_code == 403
    user.is_staff = True
    user.save()
    assert client.get("/relay/demo/").status_code == 200
    assert client.get("/relay/demo/token", {"name": "alice"}).status_code == 200


def test_only_get(client, demo_on):
    assert client.post("/relay/demo/").status_code == 405
