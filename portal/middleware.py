"""Response shaping the whole portal shares."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


class NotAllowedPageMiddleware:
    """Gives a bare 405 (Django's `require_POST` answers with an empty body) the portal's
    page: a person who opened an action's address sees what it is and a way on. Django has
    no `handler405` to do this; API answers (JSON) are left as they are."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code != 405
            or response.content
            or request.path.startswith("/api/")
            or "text/html" not in request.headers.get("Accept", "")
        ):
            return response
        page = render(request, "405.html", {"allowed": response.get("Allow", "")}, status=405)
        if response.has_header("Allow"):
            page["Allow"] = response["Allow"]
        return page
