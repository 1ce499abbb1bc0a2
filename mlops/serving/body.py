"""Request bodies of the hot routes, parsed by pydantic-core straight from the bytes.

A FastAPI body parameter costs an order of magnitude more per request (annotation
introspection on every call, then the standard library's JSON parser) than
``model_validate_json``, which parses and validates in one pass. The OpenAPI document
describes these bodies all the same (``mlops.serving.openapi``).

What a body may be: JSON, declared so or not declared at all (``tritonclient.http`` and
curl's ``--data-binary`` send no Content-Type; KServe and Triton accept that), in UTF-8 or,
when the Content-Type names it, UTF-16 or UTF-32 (RFC 8259 wants UTF-8 between systems;
decoding a declared charset costs nothing on the UTF-8 path). An empty body, bytes that
are not in the declared encoding and an object with a repeated key are 400s naming the
problem: with a repeated key every JSON parser here would silently keep the last value, so
the client would be scored on a value it may not have meant.
"""

from __future__ import annotations

import codecs
import json
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

Body = TypeVar("Body", bound=BaseModel)
# Set in the ASGI scope by ``mlops.serving.protocol`` when a request's body has not
# arrived within the body timeout: the reader then answers 408 instead of waiting.
READ_TIMED_OUT = "mlops.read_timed_out"
_CHARSETS = {"utf-8", "ascii", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le",
             "utf-32-be"}  # as codecs.lookup names them
_UTF8_BOM = codecs.BOM_UTF8
BINARY_HEADER = b"inference-header-content-length"  # the binary tensor data extension


class UnsupportedMediaType(ValueError):
    """A body declared as something other than JSON, or in a charset JSON does not use."""


class BadBody(ValueError):
    """A body that is empty, not in its declared encoding, or repeats a key in an object."""


class RequestTimeout(TimeoutError):
    """A body that did not arrive within the body timeout (a slow or lying client)."""


def is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower().endswith(("/json", "+json"))


async def parse_body(request: Request, model: type[Body]) -> Body:
    """The body as ``model``; 415 when not JSON, 400 when empty, not in its encoding or
    repeating a key, 422 naming each malformed field.

    Reads the raw header list and the ASGI messages directly: Starlette's Headers object
    and body stream cost more than the parse itself on a one-row request.
    """
    charset = declared_charset(request.scope["headers"])
    return validated(as_utf8(await _read(request), charset), model)


async def parse_with_binary(request: Request, model: type[Body]) -> tuple[Body, memoryview]:
    """The JSON part of a body as ``model`` and the binary data after it (empty without the
    binary tensor data extension, whose header gives the JSON part's length).

    With the extension the body may be declared as JSON, as application/octet-stream or not
    at all (tritonclient sends no Content-Type); its JSON part is UTF-8.
    """
    declared, binary = None, None
    for key, value in request.scope["headers"]:  # one pass over the raw headers
        if key == b"content-type":
            declared = value
        elif key == BINARY_HEADER:
            binary = value
    length = binary_header_length(binary)
    if length is None:
        charset = _charset(declared.decode("latin-1") if declared is not None else None)
        return validated(as_utf8(await _read(request), charset), model), memoryview(b"")
    content_type = declared.decode("latin-1") if declared is not None else ""
    media = content_type.split(";")[0].strip().lower()
    if media and media != "application/octet-stream" and not is_json(media):
        raise UnsupportedMediaType(f"with {BINARY_HEADER.decode()} the Content-Type must be "
                                   f"application/octet-stream or JSON, got {content_type!r}")
    data = await _read(request)
    if length > len(data):
        raise BadBody(f"{BINARY_HEADER.decode()} is {length}, but the body holds only "
                      f"{len(data)} bytes")
    return validated(as_utf8(data[:length], "utf-8"), model), memoryview(data)[length:]


def binary_header_length(value: bytes | None) -> int | None:
    """The JSON part's length from the Inference-Header-Content-Length header's value (None
    when absent); 400 when it is not a non-negative integer."""
    if value is None:
        return None
    if not value.strip().isdigit():
        raise BadBody(f"{BINARY_HEADER.decode()} must be a non-negative integer, got "
                      f"{value.decode('latin-1')!r}")
    return int(value)


def validated(data: bytes, model: type[Body]) -> Body:
    """UTF-8 JSON ``data`` parsed and validated as ``model`` in one pass (422 naming each
    malformed field), a repeated key refused (400)."""
    try:
        parsed = model.model_validate_json(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors[0]["type"] == "json_invalid":
            _check_utf8(data)  # a clearer message than the parser's, when that is the cause
        raise RequestValidationError(errors) from None
    key = duplicate_key(data, parsed)
    if key is not None:
        raise BadBody(f"key {key!r} appears twice in one JSON object; send each key once")
    return parsed


def declared_charset(headers: list[tuple[bytes, bytes]]) -> str:
    """The body's charset (codecs' name) from the Content-Type: UTF-8 when none is given;
    415 for a media type other than JSON or a charset other than UTF-8/16/32."""
    return _charset(next((value.decode("latin-1") for key, value in headers
                          if key == b"content-type"), None))


def _charset(content_type: str | None) -> str:
    if content_type is None or content_type == "application/json":
        return "utf-8"
    if not is_json(content_type):
        raise UnsupportedMediaType(f"Content-Type must be application/json, got "
                                   f"{content_type!r}")
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"')
            try:
                name = codecs.lookup(charset).name
            except LookupError:
                name = ""
            if name not in _CHARSETS:
                raise UnsupportedMediaType(f"charset {charset!r} is not accepted for JSON; "
                                           "send UTF-8 (or declare UTF-16 or UTF-32)")
            return name
    return "utf-8"


def as_utf8(body: bytes, charset: str) -> bytes:
    """The body as UTF-8 bytes (a UTF-8 byte order mark dropped); 400 when empty or not in
    the declared ``charset``."""
    if charset not in ("utf-8", "ascii"):
        try:
            body = body.decode(charset).encode()
        except UnicodeError as exc:
            raise BadBody(f"body is not valid {charset.upper()}: {exc.reason} at byte "
                          f"{getattr(exc, 'start', 0)}") from None
    if body.startswith(_UTF8_BOM):
        body = body[len(_UTF8_BOM):]
    if not body or body.isspace():
        raise BadBody("request body is empty; send a JSON object")
    return body


def _check_utf8(data: bytes) -> None:
    try:
        data.decode()
    except UnicodeDecodeError as exc:
        raise BadBody(f"body is not valid UTF-8: byte 0x{data[exc.start]:02x} at position "
                      f"{exc.start} ({exc.reason}); send UTF-8 JSON or declare its charset "
                      "(UTF-16, UTF-32)") from None


def duplicate_key(data: bytes, parsed: Any) -> str | None:
    """The first key repeated within one object of the valid JSON ``data``, or None.

    Cheap on the common path: every key is followed by a colon, so when the text holds
    no more colons than the parsed objects hold keys, no object lost a repeated key. Only
    otherwise (a repeated key, or a colon inside a string) is the text parsed again.
    """
    if data.count(b":") == _count_keys(parsed):
        return None
    found: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [name for name, _ in items]
        if not found and len(set(names)) != len(names):
            found.append(next(n for i, n in enumerate(names) if n in names[:i]))
        return dict(items)

    json.loads(data, object_pairs_hook=pairs)
    return found[0] if found else None


def _count_keys(value: Any) -> int:
    """Keys held by a parsed body's models, their dicts and lists of dicts or models.

    A lower bound (objects nested deeper are not counted), which keeps ``duplicate_key``
    sound: a shortfall only sends the body to the exact check. A loop over a stack, not
    recursion: it runs on every request.
    """
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            count += len(item)
        elif kind is list:
            first = type(item[0]) if item else None
            if first is dict:  # v1 records
                count += sum(len(entry) for entry in item if type(entry) is dict)
            elif first is not None and issubclass(first, BaseModel):
                stack.extend(item)
        elif isinstance(item, BaseModel):
            fields, values = item.__pydantic_fields_set__, item.__dict__
            count += len(fields)
            stack.extend(values[name] for name in fields)
    return count


async def _read(request: Request) -> bytes:
    message = await request.receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        if request.scope.get(READ_TIMED_OUT):
            raise RequestTimeout("the request body did not arrive within the body timeout")
        message = await request.receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)

