"""A fault-injecting httpx transport in front of a real registry.

Only for faults that a real registry cannot produce on demand (corrupted bytes,
a reset mid-body, 429/503 bursts, a lying digest header). Every rule forwards to
the real transport unless it replaces the response entirely, so the path under
test is the real registry's, with one fault added.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

Action = Callable[[httpx.Request, httpx.BaseTransport], httpx.Response]


@dataclass
class Rule:
    method: str
    path: re.Pattern[str]
    action: Action
    times: int
    hits: int = 0

    def matches(self, request: httpx.Request) -> bool:
        return (
            self.hits < self.times
            and request.method == self.method
            and self.path.search(request.url.path) is not None
        )


@dataclass
class FaultTransport(httpx.BaseTransport):
    inner: httpx.BaseTransport = field(default_factory=httpx.HTTPTransport)
    rules: list[Rule] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)

    def add(self, method: str, path: str, action: Action, times: int = 1) -> Rule:
        rule = Rule(method, re.compile(path), action, times)
        self.rules.append(rule)
        return rule

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path))
        for rule in self.rules:
            if rule.matches(request):
                rule.hits += 1
                return rule.action(request, self.inner)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def status(code: int, headers: dict[str, str] | None = None) -> Action:
    def act(request: httpx.Request, inner: httpx.BaseTransport) -> httpx.Response:
        return httpx.Response(code, headers=headers or {}, request=request)

    return act


def _forward(request: httpx.Request, inner: httpx.BaseTransport) -> tuple[httpx.Response, bytes]:
    response = inner.handle_request(request)
    body = response.read()
    response.close()
    return response, body


def _rebuild_for(
    request: httpx.Request,
    response: httpx.Response,
    stream: httpx.SyncByteStream,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    merged = httpx.Headers(response.headers)
    for name, value in (headers or {}).items():
        merged[name] = value
    return httpx.Response(response.status_code, headers=merged, stream=stream, request=request)


class _Stream(httpx.SyncByteStream):
    def __init__(self, parts: Iterator[bytes]) -> None:
        self._parts = parts

    def __iter__(self) -> Iterator[bytes]:
        yield from self._parts


def reset_after(n: int) -> Action:
    """Forward, but the connection 'resets' after ``n`` bytes of body."""

    def act(request: httpx.Request, inner: httpx.BaseTransport) -> httpx.Response:
        response, body = _forward(request, inner)

        def parts() -> Iterator[bytes]:
            yield body[:n]
            raise httpx.ReadError("[Errno 104] Connection reset by peer")

        return _rebuild_for(request, response, _Stream(parts()))

    return act


def truncate_after(n: int) -> Action:
    """Forward, but the body ends after ``n`` bytes (headers unchanged)."""

    def act(request: httpx.Request, inner: httpx.BaseTransport) -> httpx.Response:
        response, body = _forward(request, inner)
        return _rebuild_for(request, response, _Stream(iter([body[:n]])))

    return act


def flip_byte(offset: int) -> Action:
    """Forward, with one bit flipped at ``offset`` of the body."""

    def act(request: httpx.Request, inner: httpx.BaseTransport) -> httpx.Response:
        response, body = _forward(request, inner)
        corrupted = bytearray(body)
        corrupted[offset] ^= 0x01
        return _rebuild_for(request, response, _Stream(iter([bytes(corrupted)])))

    return act


def replace_header(name: str, value: str) -> Action:
    """Forward, with one response header replaced."""

    def act(request: httpx.Request, inner: httpx.BaseTransport) -> httpx.Response:
        response, body = _forward(request, inner)
        return _rebuild_for(request, response, _Stream(iter([body])), {name: value})

    return act


def serve_body(body: bytes, headers: dict[str, str]) -> Action:
    """Answer 200 with ``body`` (for hostile content a registry would refuse to store)."""

    def act(request: httpx.Request, inner: httpx.BaseTransport) -> httpx.Response:
        return httpx.Response(200, headers=headers, content=body, request=request)

    return act


def paginate_tags(page_size: int) -> Action:
    """Answer a tag list in pages with ``Link`` headers, from the real registry's full list
    (distribution 2.8 ignores ``n`` on tag lists; other registries page them)."""

    def act(request: httpx.Request, inner: httpx.BaseTransport) -> httpx.Response:
        last = request.url.params.get("last")
        full = httpx.Request(
            request.method, request.url.copy_with(query=None), headers=request.headers
        )
        _, body = _forward(full, inner)
        doc = json.loads(body)
        tags = sorted(doc["tags"])
        start = tags.index(last) + 1 if last else 0
        page = tags[start : start + page_size]
        headers = {"Content-Type": "application/json"}
        if start + page_size < len(tags):
            headers["Link"] = f'<{request.url.path}?n={page_size}&last={page[-1]}>; rel="next"'
        out = json.dumps({"name": doc["name"], "tags": page}).encode()
        return httpx.Response(200, headers=headers, content=out, request=request)

    return act
