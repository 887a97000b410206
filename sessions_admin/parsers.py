"""Request parsing and content negotiation that fail with 4xx, never 500."""

import codecs
import json

from django.conf import settings
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser

# Charsets a JSON body may name: UTF-8, and ASCII, which is a subset of it.
_CHARSETS = {"utf-8": "UTF-8", "ascii": "ASCII"}


def _strict_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _object_without_duplicate_keys(pairs: list[tuple]) -> dict:
    """Build a JSON object, refusing one that names a key twice (which value was meant?)."""
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key[:100]!r}")
            seen.add(key)
    return obj


def _content_length(request) -> int | None:
    """The body size the client announced, if any (the middleware has checked it)."""
    if request is None:
        return None
    try:
        return int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


class StrictJSONParser(JSONParser):
    """Parse a UTF-8 JSON body.

    DRF's ``JSONParser`` decodes with whatever charset the client names
    (``codecs`` also knows ``zlib`` or ``rot13``) and lets ``RecursionError``
    escape on deeply nested arrays; both end as a 500. Here other charsets are
    415 and every malformed body is a parse error (400), as is an object that
    names a key twice (Python would keep the last value without a word).
    A body labelled ASCII is taken, and must then be ASCII. A compressed body
    (any ``Content-Encoding`` but ``identity``) is 415. A body that ends before
    its ``Content-Length`` is a parse error, whatever it holds.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        coding = request.META.get("HTTP_CONTENT_ENCODING", "") if request is not None else ""
        if coding.strip().lower() not in ("", "identity"):
            # Read as it is, a compressed body is a parse error; as if plain, a lie.
            raise exceptions.UnsupportedMediaType(
                media_type,
                detail=f"Unsupported Content-Encoding {coding[:50]!r}: send the body uncompressed",
            )
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        try:
            codec = codecs.lookup(encoding).name
        except LookupError:
            codec = None
        if codec not in _CHARSETS:
            raise exceptions.UnsupportedMediaType(
                media_type, detail=f"Unsupported charset {encoding!r}: send UTF-8 JSON"
            )
        raw = stream.read() if stream is not None else b""
        announced = _content_length(request)
        if announced is not None and len(raw) < announced:
            # The client hung up mid-body: act on none of it, even if what came parses.
            raise exceptions.ParseError(
                f"Request body ended after {len(raw):,} of the {announced:,} bytes "
                "its Content-Length announced"
            )
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError as exc:
            raise exceptions.ParseError(
                f"Request body is not valid {_CHARSETS[codec]}: {exc.reason}"
            ) from None
        try:
            return json.loads(
                text,
                parse_constant=_strict_constant,
                object_pairs_hook=_object_without_duplicate_keys,
            )
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None


class JSONContentNegotiation(DefaultContentNegotiation):
    """Answer in JSON whatever ``Accept`` or ``?format=`` say, as elizaOS does (no 406/404)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
