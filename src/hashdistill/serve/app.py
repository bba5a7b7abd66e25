"""The HTTP service over one collection (FastAPI): search by image, codes or item; add and remove items;
thumbnails; the page at ``/``; OpenAPI at ``/docs`` (docs/service.md).

Every expected failure is a 4xx JSON ``{"detail": "<one line>"}``: not an image, a truncated image, an image
over the pixel limit, an upload over the size limit, codes of the wrong length, a bad ``k`` or ``radius``, an
unknown id, a missing or wrong token. Writes need the bearer token (reads too with ``private``). Only files
inside the collection folder (stored images, thumbnails) or a protocol's own images are ever served.
"""

from __future__ import annotations

import hmac
import time
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path as FilePath
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..codes import pack
from ..collection import STORED, Collection, CollectionError
from ..data.images import ImageError, decode_image
from .batcher import MicroBatcher

ItemId = Annotated[int, Field(ge=0, le=2**63 - 1)]  # SQLite's integer range


class Limits(BaseModel):
    """What one request may ask for."""

    max_upload_mb: float = Field(10.0, gt=0)
    max_pixels: int = Field(40_000_000, gt=0)
    max_k: int = Field(1000, gt=0)
    max_files: int = Field(64, gt=0)
    max_json_kb: float = Field(64.0, gt=0)
    """a JSON body (a search by codes or id: K signs and a few fields)"""

    def body_limits(self) -> dict[str, int]:
        """The largest body each kind of request may send, in bytes (``BodyLimit``)."""
        upload = int(self.max_upload_mb * 2**20)
        return {
            "json": int(self.max_json_kb * 1024), "search-upload": upload + 2**16,
            "items": upload * self.max_files + 2**20, "other": 2**16,
        }  # fmt: skip


def shown_source(source: str) -> str:
    """An item's source as a client sees it: a file added from the server's disk by its file name only (never
    the server's folders); a stored image (``collection:images/…``) or a protocol item as it is."""
    if source.startswith(STORED) or not ("/" in source or "\\" in source):
        return source
    return FilePath(source.replace("\\", "/")).name


class Result(BaseModel):
    id: int
    distance: int
    source: str
    label: str | None


class SearchResponse(BaseModel):
    results: list[Result]
    took_ms: float


class CodeSearch(BaseModel):
    """Search by a code (``codes``: the K signs of one code, -1 / +1) or by an item already in the collection (``id``)."""

    model_config = ConfigDict(extra="forbid")
    codes: list[int] | None = None  # K signs, -1 / +1 (checked with numpy: a per-item Literal is slow)
    id: ItemId | None = None
    k: int = 10
    radius: int | None = None


class Item(BaseModel):
    id: int
    source: str
    label: str | None


class Added(BaseModel):
    ids: list[int]


def create_app(
    collection: Collection, token: str | None = None, private: bool = False, limits: Limits | None = None,
    window_ms: float = 3.0,
) -> FastAPI:  # fmt: skip
    """The app serving ``collection``. ``token``: the bearer token writes need (reads too when ``private``);
    without one, writes are refused. ``window_ms``: the micro-batching window (0: off)."""
    limits = limits or Limits()
    batcher = MicroBatcher(collection.encode_arrays, window_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        batcher.close()

    app = FastAPI(
        title="hashdistill", version="1", description="Search a collection of images by Hamming distance.", lifespan=lifespan
    )
    app.state.collection, app.state.batcher = collection, batcher
    page = files("hashdistill.serve").joinpath("page.html").read_text()

    def authorised(request: Request, write: bool) -> None:
        if not write and not private:
            return
        if token is None:
            raise HTTPException(403, "writes are disabled: the server runs without a token")
        given = request.headers.get("authorization", "")
        if not given.lower().startswith("bearer "):
            raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)")
        if not hmac.compare_digest(given[7:].strip().encode(), token.encode()):
            raise HTTPException(403, "wrong bearer token")

    async def reader(request: Request) -> None:  # async: FastAPI would run a plain def in its thread pool
        authorised(request, write=False)

    async def writer(request: Request) -> None:
        authorised(request, write=True)

    def check_k(k: int, radius: int | None) -> None:
        if not 0 < k <= limits.max_k:
            raise HTTPException(422, f"k must be in 1..{limits.max_k}, got {k}")
        if radius is not None and not 0 <= radius <= collection.bits:
            raise HTTPException(422, f"radius must be in 0..{collection.bits}, got {radius}")

    def respond(hits: list, t0: float) -> JSONResponse:
        """``SearchResponse`` as JSON, built directly (the hot path skips re-validating what it just made)."""
        results = [{"id": h.id, "distance": h.distance, "source": shown_source(h.source), "label": h.label} for h in hits]
        return JSONResponse({"results": results, "took_ms": round((time.perf_counter() - t0) * 1000, 3)})

    async def read_upload(upload: UploadFile) -> bytes:
        limit = int(limits.max_upload_mb * 2**20)
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"{upload.filename or 'upload'}: over the upload limit of {limits.max_upload_mb:g} MB")
        return data

    def decode(data: bytes, name: str) -> np.ndarray:
        return decode_upload(data, name, limits.max_pixels)

    app.add_middleware(BodyLimit, limits=limits.body_limits())

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        return JSONResponse(status_code=422, content={"detail": f"{where}: {err.get('msg', 'invalid')}"})

    @app.exception_handler(CollectionError)
    async def collection_error(request: Request, exc: CollectionError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "items": len(collection)}

    @app.get("/stats", dependencies=[Depends(reader)])
    def stats() -> dict[str, Any]:
        stats = collection.stats()
        run = stats.get("run")  # a client sees the run's name, never a path on the server
        return {**stats, "run": FilePath(run).name if run else run, "max_k": limits.max_k, "private": private,
                "writable": token is not None}  # fmt: skip

    @app.get("/random", dependencies=[Depends(reader)])
    def random_item() -> Item:
        """A random item (the page's "random item from the collection")."""
        hit = collection.random_item()
        if hit is None:
            raise HTTPException(404, "the collection is empty")
        return Item(id=hit.id, source=shown_source(hit.source), label=hit.label)

    @app.post(
        "/search", response_model=SearchResponse, dependencies=[Depends(reader)],
        openapi_extra={"requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary"}}}},
            "application/json": {"schema": CodeSearch.model_json_schema()},
        }}},
    )  # fmt: skip
    async def search(
        request: Request, k: Annotated[int, Query()] = 10, radius: Annotated[int | None, Query()] = None
    ) -> JSONResponse:
        """Search by an image (multipart field ``file``; ``k`` and ``radius`` as query parameters), or by a code
        or an item id (JSON ``{"codes": [...], "k": 10}`` or ``{"id": 123}``)."""
        t0 = time.perf_counter()
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            check_k(k, radius)
            form = await request.form(max_files=1, max_fields=4)
            upload = form.get("file")
            if not hasattr(upload, "read"):
                raise HTTPException(422, "file: an image upload is required (multipart field 'file')")
            image = decode(await read_upload(upload), upload.filename or "file")
            image = collection.prepare_image(image)
            batcher.arrived()
            try:
                code = await run_in_threadpool(batcher.encode, image)
            finally:
                batcher.left()
            return respond(collection.search_codes(pack(code[None]), k, radius)[0], t0)
        try:
            raw = await request.json()
        except RecursionError:
            raise HTTPException(422, "body: JSON nested too deeply") from None
        except ValueError as e:
            raise HTTPException(
                422, f"body: a JSON object with codes or id (and k, radius), or a multipart image ({_first(e)})"
            ) from None
        try:
            body = CodeSearch.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            raise HTTPException(422, f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}") from None
        check_k(body.k, body.radius)
        if (body.codes is None) == (body.id is None):
            raise HTTPException(422, "give either codes or id")
        if body.id is not None:
            item = collection.get([body.id])[0]
            if item is None:
                raise HTTPException(404, f"no item {body.id}")
            codes = collection.codes_of([body.id])
        else:
            if len(body.codes) != collection.bits:
                raise HTTPException(422, f"codes: {len(body.codes)} signs, the collection holds {collection.bits}-bit codes")
            signs = np.array(body.codes, np.int64)
            if not np.isin(signs, (-1, 1)).all():
                raise HTTPException(422, "codes: every sign must be -1 or 1")
            codes = pack(signs[None].astype(np.int8))
        # a search by code is a fraction of a millisecond: no thread hop
        return respond(collection.search_codes(codes, body.k, body.radius)[0], t0)

    @app.post("/items", response_model=Added, dependencies=[Depends(writer)], status_code=201)
    async def add_items(files: Annotated[list[UploadFile], File(description="one or more images")]) -> Added:
        """Add images (multipart fields ``files``); they are stored inside the collection."""
        if len(files) > limits.max_files:
            raise HTTPException(413, f"at most {limits.max_files} files per request, got {len(files)}")
        images = [decode(await read_upload(f), f.filename or "file") for f in files]
        ids = await run_in_threadpool(collection.add, images)
        return Added(ids=[int(i) for i in ids])

    @app.get("/items/{item_id}", response_model=Item, dependencies=[Depends(reader)])
    def get_item(item_id: Annotated[int, Path(ge=0, le=2**63 - 1)]) -> Item:
        hit = collection.get([item_id])[0]
        if hit is None:
            raise HTTPException(404, f"no item {item_id}")
        return Item(id=hit.id, source=shown_source(hit.source), label=hit.label)

    @app.get("/items/{item_id}/image", dependencies=[Depends(reader)], responses={200: {"content": {"image/png": {}}}})
    def item_image(item_id: Annotated[int, Path(ge=0, le=2**63 - 1)]) -> Response:
        """The item's thumbnail (read from inside the collection, or a protocol's own images)."""
        try:
            data = collection.thumbnail(item_id)
        except CollectionError as e:
            raise HTTPException(404, str(e)) from None
        kind = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
        return Response(data, media_type=kind, headers={"Cache-Control": "max-age=3600"})

    @app.delete("/items/{item_id}", dependencies=[Depends(writer)])
    def delete_item(item_id: Annotated[int, Path(ge=0, le=2**63 - 1)]) -> dict[str, int]:
        if not collection.remove([item_id]):
            raise HTTPException(404, f"no item {item_id}")
        return {"removed": 1}

    return app


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: each kind of request has its own body limit (``Limits.body_limits``): a JSON search a
    few kilobytes, a search by image one upload, ``POST /items`` its files. A body announced larger is refused
    (413) unread; a body without a length (chunked) is counted as it arrives and refused once it passes."""

    def __init__(self, app: Any, limits: dict[str, int]) -> None:
        self.app, self.limits = app, limits

    def limit(self, scope: dict) -> int:
        headers = dict(scope["headers"])
        kind = headers.get(b"content-type", b"").decode("latin-1").lower()
        if scope["method"] == "POST" and scope["path"] == "/items":
            return self.limits["items"]
        if scope["method"] == "POST" and scope["path"] == "/search":
            return self.limits["search-upload" if kind.startswith("multipart/") else "json"]
        return self.limits["other"]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await self.refuse(scope, receive, send, f"request body of {int(length):,} bytes is over the limit of {limit:,}")
            return
        seen, started = 0, False

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        async def sending(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except BodyTooLarge:
            if not started:
                await self.refuse(scope, receive, send, f"request body over the limit of {limit:,} bytes")

    @staticmethod
    async def refuse(scope: dict, receive: Any, send: Any, detail: str) -> None:
        await JSONResponse(status_code=413, content={"detail": detail}, headers={"Connection": "close"})(scope, receive, send)


def decode_upload(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """An uploaded image as uint8 RGB (``data.images.decode_image``); bad input raises ``HTTPException`` 400, or
    413 for an image over the pixel limit, naming the upload."""
    try:
        return decode_image(data, name, max_pixels)
    except ImageError as e:
        raise HTTPException(413 if e.reason == "too-large" else 400, str(e)) from None


def _first(e: Exception) -> str:
    return str(e).splitlines()[0][:160] if str(e) else type(e).__name__
