"""The HTTP service over one collection (FastAPI): search by image, codes or item, one or a batch, filtered by
label and metadata; add, page through, change and remove items; snapshots; thumbnails; liveness, readiness and
Prometheus metrics; the page at ``/``; OpenAPI at ``/docs`` (docs/service.md).

Every expected failure is a 4xx JSON ``{"detail": "<one line>"}``: not an image, a truncated image, an image
over the pixel limit, an upload over the size limit, codes of the wrong length, a bad ``k``, ``radius`` or
filter, bad metadata, an unknown id, a missing or wrong key. Writes need the write key; with ``private``,
reads need the read key (or the write key). Keys given as files are re-read when the files change. Only files
inside the collection folder (stored images, thumbnails) or a protocol's own images are ever served.
"""

from __future__ import annotations

import gc
import hmac
import json
import threading
import time
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Path, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..codes import pack
from ..collection import MAX_PAGE, OVERSAMPLE, RERANK, RERANKS, STORED, Collection, CollectionError, Where
from ..data.images import ImageError, decode_image
from ..index.rerank import EXPAND, MAX_EXPAND
from .batcher import MicroBatcher
from .metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from .token import Key

ItemId = Annotated[int, Field(ge=0, le=2**63 - 1)]  # SQLite's integer range
MAX_META_FORM = 2**20  # the ``metadata`` field of ``POST /items``: up to 4 KB per file (collection/metadata.py)


class Limits(BaseModel):
    """What one request may ask for."""

    max_upload_mb: float = Field(10.0, gt=0)
    max_pixels: int = Field(40_000_000, gt=0)
    max_k: int = Field(1000, gt=0)
    max_files: int = Field(64, gt=0)
    max_json_kb: float = Field(64.0, gt=0)
    """a JSON body (a search by codes or id: K signs and a few fields; a batch may send ``max_batch`` of them)"""
    max_batch: int = Field(64, gt=0)
    """searches in one ``POST /search/batch``"""

    def body_limits(self) -> dict[str, int]:
        """The largest body each kind of request may send, in bytes (``BodyLimit``)."""
        upload = int(self.max_upload_mb * 2**20)
        return {
            "json": int(self.max_json_kb * 1024), "search-upload": upload + 2**16,
            "items": upload * self.max_files + 2**20, "other": 2**16,
            "batch": int(self.max_json_kb * 1024) * self.max_batch, "batch-upload": upload * self.max_batch + 2**16,
        }  # fmt: skip


def shown_source(source: str) -> str:
    """An item's source as a client sees it: a file added from the server's disk by its file name only (never
    the server's folders); a stored image (``collection:images/…``) or a protocol item as it is."""
    if source.startswith(STORED) or not ("/" in source or "\\" in source):
        return source
    return FilePath(source.replace("\\", "/")).name


Rerank = Literal[RERANKS]  # a search's re-ranking: the collection's choices (docs/search.md)


class Result(BaseModel):
    id: int
    distance: int
    source: str
    label: str | None
    meta: dict[str, Any] | None = None
    score: float | None = None  # <h_q, b>, where the search re-ranked


class SearchResponse(BaseModel):
    results: list[Result]
    took_ms: float


class CodeSearch(BaseModel):
    """Search by a code (``codes``: the K signs of one code, -1 / +1) or by an item already in the collection (``id``:
    by its code, re-ranked with its stored output as a search by its image is; ``rerank``, ``oversample``,
    ``expand``)."""

    model_config = ConfigDict(extra="forbid")
    codes: list[int] | None = None  # K signs, -1 / +1 (checked with numpy: a per-item Literal is slow)
    id: ItemId | None = None
    k: int = 10
    radius: int | None = None
    filter: dict[str, Any] | None = None  # {"label": "Shirt"}, {"meta.shop": {"in": ["a", "b"]}} (collection/metadata.py)
    rerank: Rerank = RERANK  # (a search by signs ranks by Hamming distance: any score of its bits repeats it)
    oversample: int = Field(OVERSAMPLE, ge=1, le=100)
    expand: int = Field(EXPAND, ge=0, le=MAX_EXPAND)


class BatchSearch(BaseModel):
    """Several searches by code or id in one request (``Limits.max_batch`` at most), one result list each."""

    model_config = ConfigDict(extra="forbid")
    searches: list[CodeSearch]


class BatchResponse(BaseModel):
    results: list[list[Result]]
    took_ms: float


class Item(BaseModel):
    id: int
    source: str
    label: str | None
    meta: dict[str, Any] | None = None


class Page(BaseModel):
    items: list[Item]
    next: int | None  # ``after`` of the next page; null on the last


class MetaPatch(BaseModel):
    """A JSON merge patch of an item's metadata: keys set, a key set to null removed."""

    model_config = ConfigDict(extra="forbid")
    meta: dict[str, Any]


class Added(BaseModel):
    ids: list[int]


def create_app(
    collection: Collection, token: str | FilePath | None = None, private: bool = False, limits: Limits | None = None,
    window_ms: float = 3.0, *, read_token: str | FilePath | None = None, warm_up: bool = False,
    snapshots: FilePath | None = None, freeze_gc: bool = False,
) -> FastAPI:  # fmt: skip
    """The app serving ``collection``. ``token``: the write key (a string, or a file re-read when it changes);
    without one, writes are refused. ``private``: reads need ``read_token`` (or the write key). ``window_ms``:
    the micro-batching window (0: off). ``warm_up``: warm the collection in the background at start, ``/readyz``
    answering 503 until done (else ready at once). ``snapshots``: the folder ``POST /snapshots`` writes into.
    ``freeze_gc``: once ready, move every object alive (the model, the libraries, the index) out of the
    garbage collector's reach (``gc.freeze``): a full collection then takes microseconds instead of the 30-45 ms
    it takes over them, which showed as the p99 of searches by code (for a process that only serves)."""
    limits = limits or Limits()
    batcher = MicroBatcher(collection.encode_arrays, window_ms)
    write_key, read_key = Key(token), Key(read_token)
    ready = threading.Event()
    if not (warm_up or freeze_gc):
        ready.set()

    def warm() -> None:
        if warm_up:
            collection.warm_up()
        if freeze_gc:
            gc.collect()
            gc.freeze()
        ready.set()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not ready.is_set():
            threading.Thread(target=warm, name="warm-up", daemon=True).start()
        yield
        batcher.close()
        await run_in_threadpool(collection.flush)  # a graceful stop: the added items' vectors into the file

    app = FastAPI(
        title="hashdistill", version="1", description="Search a collection of images by Hamming distance.", lifespan=lifespan
    )
    app.state.collection, app.state.batcher = collection, batcher
    page = files("hashdistill.serve").joinpath("page.html").read_text()
    metrics = Metrics(collection)

    def authorised(given: str, write: bool) -> None:
        """Check the ``Authorization`` header's value for a read (``write=False``) or a write."""
        if not write and not private:
            return
        keys = [k for k in (write_key.value(), None if write else read_key.value()) if k]
        if not keys:
            what = "writes are disabled: the server runs without a write key" if write else "reads need a read key"
            raise HTTPException(403, what + ("" if write else ", and the server has none"))
        if not given.lower().startswith("bearer "):
            raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)")
        presented = given[7:].strip().encode()
        if not any(hmac.compare_digest(presented, k.encode()) for k in keys):
            raise HTTPException(403, f"wrong bearer token (this route needs the {'write' if write else 'read'} key)")

    async def reader(request: Request) -> None:  # async: FastAPI would run a plain def in its thread pool
        authorised(request.headers.get("authorization", ""), write=False)

    async def writer(request: Request) -> None:
        authorised(request.headers.get("authorization", ""), write=True)

    def check_k(k: int, radius: int | None) -> None:
        if not 0 < k <= limits.max_k:
            raise HTTPException(422, f"k must be in 1..{limits.max_k}, got {k}")
        if radius is not None and not 0 <= radius <= collection.bits:
            raise HTTPException(422, f"radius must be in 0..{collection.bits}, got {radius}")

    def results(hits: list) -> list[dict[str, Any]]:
        return [
            {"id": h.id, "distance": h.distance, "source": shown_source(h.source), "label": h.label, "meta": h.meta}
            | ({} if h.score is None else {"score": round(h.score, 6)})
            for h in hits
        ]

    def respond(hits: list, t0: float) -> JSONResponse:
        """``SearchResponse`` as JSON, built directly (the hot path skips re-validating what it just made)."""
        return JSONResponse({"results": results(hits), "took_ms": round((time.perf_counter() - t0) * 1000, 3)})

    def where_of(spec: Any) -> Where | None:
        """A filter from JSON (a query parameter's text, or a body's object); 422 naming what is wrong."""
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except (ValueError, RecursionError):
                raise HTTPException(422, 'filter: not JSON (e.g. {"label": "Shirt"})') from None
        return Where.parse(spec)

    def query_codes(body: CodeSearch) -> Any:
        """One search's packed code (by its signs, or an item's own); 4xx naming what is wrong."""
        check_k(body.k, body.radius)
        if (body.codes is None) == (body.id is None):
            raise HTTPException(422, "give either codes or id")
        if body.id is not None:
            if collection.get([body.id])[0] is None:
                raise HTTPException(404, f"no item {body.id}")
            return collection.codes_of([body.id])
        if len(body.codes) != collection.bits:
            raise HTTPException(422, f"codes: {len(body.codes)} signs, the collection holds {collection.bits}-bit codes")
        signs = np.array(body.codes, np.int64)
        if not (np.abs(signs) == 1).all():
            raise HTTPException(422, "codes: every sign must be -1 or 1")
        return pack(signs[None].astype(np.int8))

    async def json_body(request: Request, model: type[BaseModel], expect: str) -> Any:
        return parse_json(await request.body(), model, expect)

    def parse_json(body: bytes, model: type[BaseModel], expect: str) -> Any:
        try:
            raw = json.loads(body)
        except RecursionError:
            raise HTTPException(422, "body: JSON nested too deeply") from None
        except ValueError as e:
            raise HTTPException(422, f"body: {expect} ({_first(e)})") from None
        try:
            return model.model_validate(raw)
        except ValidationError as e:
            err = e.errors()[0]
            raise HTTPException(422, f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}") from None

    async def read_upload(upload: UploadFile) -> bytes:
        limit = int(limits.max_upload_mb * 2**20)
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"{upload.filename or 'upload'}: over the upload limit of {limits.max_upload_mb:g} MB")
        return data

    def decode(data: bytes, name: str) -> np.ndarray:
        return decode_upload(data, name, limits.max_pixels)

    # innermost first: HotSearch (inside the body limit), BodyLimit, MetricsMiddleware (a body refused unread is counted)
    app.add_middleware(HotSearch, handler=lambda raw, headers: hot_search(raw, headers), route=lambda: search_route)
    app.add_middleware(BodyLimit, limits=limits.body_limits())
    app.add_middleware(MetricsMiddleware, metrics=metrics)

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

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        """The process answers (liveness): never touches the collection."""
        return {"status": "alive"}

    @app.get("/readyz", responses={503: {"description": "still loading or warming up"}})
    async def readyz() -> JSONResponse:
        """Ready (200) once the model and the index are loaded and warmed; 503 before."""
        if not ready.is_set():
            return JSONResponse(status_code=503, content={"status": "warming up"})
        return JSONResponse({"status": "ready", "items": len(collection)})

    @app.get("/metrics", dependencies=[Depends(reader)], responses={200: {"content": {CONTENT_TYPE: {}}}})
    def prometheus() -> Response:
        """Prometheus text format: requests and latency per route, items, the code length, encoder and index."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

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
        "/search", response_model=SearchResponse,
        openapi_extra={"requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary"}}}},
            "application/json": {"schema": CodeSearch.model_json_schema()},
        }}},
    )  # fmt: skip
    async def search(
        request: Request, k: Annotated[int, Query()] = 10, radius: Annotated[int | None, Query()] = None,
        filter: Annotated[str | None, Query(max_length=8192, description="a filter as JSON (with an image)")] = None,
        rerank: Annotated[Rerank, Query(description="rank by the image's output against the items' bits, then rescore the top oversample x k")] = RERANK,
        oversample: Annotated[int, Query(ge=1, le=100)] = OVERSAMPLE,
        expand: Annotated[int, Query(ge=0, le=MAX_EXPAND, description="stored: best candidates added to the query")] = EXPAND,
    ) -> JSONResponse:  # fmt: skip
        """Search by an image (multipart field ``file``; ``k``, ``radius`` and ``filter`` as query parameters), or
        by a code or an item id (JSON ``{"codes": [...], "k": 10}`` or ``{"id": 123, "filter": {...}}``)."""
        t0 = time.perf_counter()
        authorised(request.headers.get("authorization", ""), write=False)  # (as in by_code: not a dependency)
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            check_k(k, radius)
            where = where_of(filter)
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
            found = collection.search_rows(code[None], k, radius, where=where, rerank=rerank, oversample=oversample,
                                           expand=expand)  # fmt: skip
            return respond(found[0], t0)
        return by_code(await request.body(), t0)

    def by_code(raw: bytes, t0: float) -> JSONResponse:
        """``POST /search`` by a code or an id (JSON), from the route or ``HotSearch``."""
        body = parse_json(raw, CodeSearch, "a JSON object with codes or id (and k, radius), or a multipart image")
        return respond(search_one(body), t0)

    def search_one(body: CodeSearch) -> list:
        """The hits of one search by code or id (a fraction of a millisecond unfiltered: no thread hop)."""
        codes, where = query_codes(body), where_of(body.filter)
        if body.id is not None:
            return collection.search_items([body.id], body.k, body.radius, where=where, rerank=body.rerank,
                                           oversample=body.oversample, expand=body.expand)[0]  # fmt: skip
        return collection.search_codes(codes, body.k, body.radius, where=where)[0]

    search_route = next(r for r in app.routes if getattr(r, "path", None) == "/search")

    def hot_search(raw: bytes, authorization: str) -> JSONResponse:
        t0 = time.perf_counter()
        try:
            authorised(authorization, write=False)
            return by_code(raw, t0)
        except HTTPException as e:
            return JSONResponse({"detail": e.detail}, e.status_code, headers=e.headers)
        except CollectionError as e:
            return JSONResponse({"detail": str(e)}, 422)

    @app.post(
        "/search/batch", response_model=BatchResponse, dependencies=[Depends(reader)],
        openapi_extra={"requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
                "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
            "application/json": {"schema": BatchSearch.model_json_schema()},
        }}},
    )  # fmt: skip
    async def search_batch(
        request: Request, k: Annotated[int, Query()] = 10, radius: Annotated[int | None, Query()] = None,
        filter: Annotated[str | None, Query(max_length=8192, description="a filter as JSON (with images)")] = None,
        rerank: Annotated[Rerank, Query(description="rank by each image's output against the items' bits, then rescore the top oversample x k")] = RERANK,
        oversample: Annotated[int, Query(ge=1, le=100)] = OVERSAMPLE,
        expand: Annotated[int, Query(ge=0, le=MAX_EXPAND, description="stored: best candidates added to the query")] = EXPAND,
    ) -> JSONResponse:  # fmt: skip
        """Several searches in one request, one result list per query, in order: images (multipart fields
        ``files``, encoded as one batch; ``k``, ``radius``, ``filter`` as query parameters, for all), or JSON
        ``{"searches": [{"codes": [...]}, {"id": 12, "k": 5, "filter": {...}}]}``."""
        t0 = time.perf_counter()
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            check_k(k, radius)
            where = where_of(filter)
            form = await request.form(max_files=limits.max_batch, max_fields=4)
            uploads = [f for f in form.getlist("files") if hasattr(f, "read")]
            if not uploads:
                raise HTTPException(422, "files: one or more image uploads are required (multipart fields 'files')")
            images = [collection.prepare_image(decode(await read_upload(f), f.filename or "file")) for f in uploads]
            rows = await run_in_threadpool(collection.query_rows, images)
            found = collection.search_rows(rows, k, radius, where=where, rerank=rerank, oversample=oversample,
                                           expand=expand)  # fmt: skip
        else:
            body = await json_body(request, BatchSearch, 'a JSON object {"searches": [{"codes": [...]}, ...]}')
            if not 0 < len(body.searches) <= limits.max_batch:
                raise HTTPException(422, f"searches: 1 to {limits.max_batch} in one batch, got {len(body.searches)}")
            found = []
            for i, s in enumerate(body.searches):
                try:
                    found.append(search_one(s))
                except HTTPException as e:
                    raise HTTPException(e.status_code, f"searches.{i}: {e.detail}") from None
                except CollectionError as e:
                    raise HTTPException(422, f"searches.{i}: {e}") from None
        took = round((time.perf_counter() - t0) * 1000, 3)
        return JSONResponse({"results": [results(hits) for hits in found], "took_ms": took})

    @app.post("/items", response_model=Added, dependencies=[Depends(writer)], status_code=201)
    async def add_items(
        files: Annotated[list[UploadFile], File(description="one or more images")],
        metadata: Annotated[
            str | None, Form(max_length=MAX_META_FORM, description="JSON: one object for every file, or a list of one per file")
        ] = None,
    ) -> Added:  # fmt: skip
        """Add images (multipart fields ``files``, and ``metadata`` as JSON); they are stored inside the collection."""
        if len(files) > limits.max_files:
            raise HTTPException(413, f"at most {limits.max_files} files per request, got {len(files)}")
        try:
            meta = None if metadata is None else json.loads(metadata)
        except (ValueError, RecursionError):
            raise HTTPException(422, "metadata: not JSON (an object, or a list of one object per file)") from None
        images = [decode(await read_upload(f), f.filename or "file") for f in files]
        ids = await run_in_threadpool(lambda: collection.add(images, metadata=meta))
        return Added(ids=[int(i) for i in ids])

    @app.get("/items", response_model=Page, dependencies=[Depends(reader)])
    def list_items(
        after: Annotated[int, Query(ge=0, le=2**63 - 1, description="the last id of the previous page")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> Page:
        """Items by id, a page at a time: ``next`` is the ``after`` of the next page (null on the last)."""
        hits = collection.items(after, limit)
        items = [Item(id=h.id, source=shown_source(h.source), label=h.label, meta=h.meta) for h in hits]
        return Page(items=items, next=hits[-1].id if len(hits) == limit else None)

    @app.get("/items/{item_id}", response_model=Item, dependencies=[Depends(reader)])
    def get_item(item_id: Annotated[int, Path(ge=0, le=2**63 - 1)]) -> Item:
        hit = collection.get([item_id])[0]
        if hit is None:
            raise HTTPException(404, f"no item {item_id}")
        return Item(id=hit.id, source=shown_source(hit.source), label=hit.label, meta=hit.meta)

    @app.patch("/items/{item_id}", response_model=Item, dependencies=[Depends(writer)])
    def patch_item(item_id: Annotated[int, Path(ge=0, le=2**63 - 1)], body: MetaPatch) -> Item:
        """Change an item's metadata: ``{"meta": {"shop": "b", "old_key": null}}`` sets and removes keys."""
        if collection.get([item_id])[0] is None:
            raise HTTPException(404, f"no item {item_id}")
        hit = collection.update(item_id, body.meta)
        return Item(id=hit.id, source=shown_source(hit.source), label=hit.label, meta=hit.meta)

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

    @app.post("/snapshots", dependencies=[Depends(writer)], status_code=201)
    def take_snapshot() -> dict[str, Any]:
        """A consistent snapshot of the collection (SQLite's online backup, checksummed), written into the
        server's snapshot folder; ``hashdistill collection restore`` checks and restores it."""
        if snapshots is None:
            raise HTTPException(403, "snapshots are off: the server runs without a snapshot folder")
        name = time.strftime("snapshot-%Y%m%d-%H%M%S") + f"-{time.time_ns() % 10**9:09d}"
        manifest = collection.snapshot(FilePath(snapshots) / name)
        return {"name": name, "items": manifest["items"], "sha256": manifest["sha256"]}

    return app


class BodyTooLarge(Exception):
    pass


class HotSearch:
    """ASGI middleware: ``POST /search`` with a JSON body and no query string (a search by code or id, the
    service's hot path) answered without FastAPI's routing and parameter resolution (about 0.1 ms of the
    0.3 ms such a request costs); the same handler, errors and metrics' route as the route itself, which
    answers every other form (an image, query parameters) and documents it."""

    def __init__(self, app: Any, handler: Any, route: Any) -> None:
        self.app, self.handler, self.route = app, handler, route

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/search" or scope["query_string"]:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if headers.get(b"content-type", b"").lower().startswith(b"multipart/"):
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        scope["route"] = self.route()  # the route's template, for the metrics
        response = self.handler(b"".join(chunks), headers.get(b"authorization", b"").decode("latin-1"))
        await response(scope, receive, send)


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
        if scope["method"] == "POST" and scope["path"] == "/search/batch":
            return self.limits["batch-upload" if kind.startswith("multipart/") else "batch"]
        if scope["method"] == "PATCH":
            return self.limits["json"]
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
