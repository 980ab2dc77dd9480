"""The upload limit of browser forms, enforced while Django reads the request body.

Django has a setting for the size of non-file fields (`DATA_UPLOAD_MAX_MEMORY_SIZE`) but none
for files: its upload handlers write whatever a multipart body holds to a temporary file. The
documented way to bound them is an upload handler of one's own placed first in the chain
(https://docs.djangoproject.com/en/stable/topics/http/file-uploads/#upload-handlers), which
is what `UploadLimitHandler` is.
"""

from __future__ import annotations

from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import QueryDict
from django.utils.datastructures import MultiValueDict


class UploadLimitHandler(FileUploadHandler):
    """Stops reading a multipart body once it declares, or its files reach, `limit` bytes.

    Placed first, it sees each chunk before the handlers that write it to disk, so no more
    than `limit` bytes of files are ever spooled. `exceeded` tells the view to answer 413.
    """

    def __init__(self, request=None, *, limit: int, slack: int) -> None:
        super().__init__(request)
        self.limit = limit
        # Multipart framing and the form's other fields come on top of the files.
        self.slack = slack
        self.exceeded = False
        self._file_bytes = 0

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length > self.limit + self.slack:
            self.exceeded = True
            # Returning (POST, FILES) ends parsing here: no byte of the body is read.
            return QueryDict(encoding=encoding), MultiValueDict()
        return None

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self._file_bytes += len(raw_data)
        if self._file_bytes > self.limit:
            self.exceeded = True
            # connection_reset: the rest of the body is not read (nor drained).
            raise StopUpload(connection_reset=True)
        return raw_data

    def file_complete(self, file_size: int):
        return None
