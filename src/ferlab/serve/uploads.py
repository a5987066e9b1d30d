"""The image of a request: the checks on its headers, then its bytes, read with a size limit."""

from typing import AsyncIterator

from fastapi import Request

from ferlab.serve.service import fail

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "application/octet-stream")
FORM_TYPE = "multipart/form-data"
FORM_FIELD = "file"


def content_type_of(request: Request, max_bytes: int) -> str:
    """The request's Content-Type, after refusing the wrong ones (415) and a declared size over the limit (413)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != FORM_TYPE and content_type not in IMAGE_TYPES:
        raise fail(
            415,
            f"unsupported Content-Type {content_type or '(none)'!r}; send an image "
            f"({', '.join(IMAGE_TYPES)}) or a {FORM_TYPE} form with the field `{FORM_FIELD}`.",
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise fail(413, f"the upload ({int(declared):,} bytes) is larger than the limit of {max_bytes:,} bytes; send a smaller image.")
    return content_type


async def _limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:  # stop reading: a huge body is never held whole
            raise fail(413, f"the upload is larger than the limit of {limit:,} bytes; send a smaller image.")
        yield chunk


async def image_bytes(request: Request, content_type: str, limit: int) -> bytes:
    """The image of the request: the `file` field of a form, or the whole body."""
    body = _limited(request.stream(), limit)
    if content_type != FORM_TYPE:
        return b"".join([chunk async for chunk in body])
    from starlette.formparsers import MultiPartException, MultiPartParser

    parser = MultiPartParser(request.headers, body, max_files=1, max_fields=16)
    parser.spool_max_size = limit  # keep the file in memory: it is within the limit
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise fail(400, f"the multipart form is malformed ({err}); send the image in a field named `{FORM_FIELD}`.")
    try:
        upload = form.get(FORM_FIELD)
        if upload is None or isinstance(upload, str):
            raise fail(400, f"the form has no file field named `{FORM_FIELD}`; send the image as `{FORM_FIELD}`.")
        return await upload.read()
    finally:
        await form.close()
