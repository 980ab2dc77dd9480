"""The API's page numbers. Kept apart from `portal.api`: DRF imports its pagination class
while `rest_framework.generics` itself loads."""

from rest_framework import exceptions
from rest_framework.pagination import PageNumberPagination


class StrictPageNumberPagination(PageNumberPagination):
    """DRF's page numbers, with an empty `page` refused like any other invalid page (DRF
    reads it as page 1) so that the schema's `integer` is the truth."""

    def get_page_number(self, request, paginator):
        if request.query_params.get(self.page_query_param) == "":
            raise exceptions.NotFound("Invalid page.")
        return super().get_page_number(request, paginator)
