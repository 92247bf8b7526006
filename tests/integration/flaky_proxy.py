"""A pass-through proxy in front of a real vLLM server that fails requests on demand.

It stands in for an overloaded replica or a load balancer that lost one: every request is
forwarded unchanged to the real server, except that the next ``fail_next`` completions are
answered with ``status`` first, and the next ``stall_next`` are held back for ``stall_s``
before being forwarded. Only the failure is staged; generation is vLLM's.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from servers import free_port


class FlakyProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.fail_next = 0
        self.status = 503
        self.stall_next = 0
        self.stall_s = 5.0
        self.completions = 0  # completion requests seen, failed ones included
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/{path:path}", self._forward, methods=["GET", "POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    async def _forward(self, request: Request) -> Response:
        path = request.url.path
        if path == "/v1/completions":
            self.completions += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                return Response("overloaded", status_code=self.status)
            if self.stall_next > 0:
                self.stall_next -= 1
                await asyncio.sleep(self.stall_s)
        client = httpx.AsyncClient(timeout=None)
        upstream = client.build_request(
            request.method,
            self.upstream + path,
            content=await request.body(),
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )
        reply = await client.send(upstream, stream=True)

        async def body() -> Any:
            try:
                async for chunk in reply.aiter_raw():
                    yield chunk
            finally:
                await reply.aclose()
                await client.aclose()

        return StreamingResponse(
            body(),
            status_code=reply.status_code,
            media_type=reply.headers.get("content-type"),
        )
