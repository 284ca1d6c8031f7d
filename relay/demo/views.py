"""The demo page, and the tokens of its clients."""

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from relay.demo.identity import DEMO_PREFIX, NAME_PATTERN, check_access, demo_names
from relay.identity import tokens

#: The demo's clients fetch a new token before every connection: a short one is enough.
TOKEN_TTL = 300


@require_GET
def page(request: HttpRequest) -> HttpResponse:
    """The demo: one panel per name of ``?names=`` (alice and bob by default)."""
    check_access(request)
    config = {
        "names": demo_names(request.GET.get("names")),
        "prefix": DEMO_PREFIX,
        "tokenUrl": reverse("relay:demo-token"),
        "room": "demo",
    }
    return render(request, "relay/demo.html", {"config": config})


@never_cache
@require_GET
def token(request: HttpRequest) -> JsonResponse:
    """``?name=alice``: a token for ``demo-alice``, fetched by relay.js before each connection."""
    check_access(request)
    name = request.GET.get("name", "")
    if not NAME_PATTERN.fullmatch(name):
        raise Http404("name: 1-20 characters of a-z 0-9.")
    client_id = DEMO_PREFIX + name
    return JsonResponse({"client_id": client_id, "token": tokens.issue(client_id, ttl=TOKEN_TTL)})
