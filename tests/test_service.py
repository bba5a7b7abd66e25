"""The HTTP service over a collection: the API's shapes, every bad input as a 4xx with one message, tokens,
nothing outside the collection served, writes and searches at once then a restart, a schema-driven fuzz,
and the page in a real browser."""

import io
import shutil
import socket
import sqlite3
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import Unsatisfiable
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from hashdistill.codes import PackedCodes
from hashdistill.collection import Collection
from hashdistill.serve import Limits, create_app

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def collection(shapes_run, shapes, tmp_path_factory):
    folder = tmp_path_factory.mktemp("svc") / "shapes.hdc"
    with Collection.create(folder, shapes_run) as col:
        col.add(shapes / "database")
    return folder


@pytest.fixture
def client(collection):
    col = Collection.open(collection)
    with TestClient(create_app(col, TOKEN, limits=Limits(max_upload_mb=0.05, max_pixels=1_000_000, max_k=100))) as c:
        yield c
    col.close()


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A 1 x 1 PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    data = bytearray(png(np.zeros((1, 1), np.uint8)))
    data[16:20], data[20:24] = width.to_bytes(4, "big"), height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def test_search_by_image_codes_and_item(client, shapes):
    query = (shapes / "database" / "disc" / "disc-000.png").read_bytes()
    r = client.post("/search?k=5", files={"file": ("q.png", query, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"results", "took_ms"} and len(body["results"]) == 5
    first = body["results"][0]  # re-ranked by default: the cosine with the stored outputs of the top 50 by Hamming
    assert set(first) == {"id", "distance", "source", "label", "meta", "score"}
    assert first["distance"] == 0 and first["source"].endswith("disc-000.png") and first["label"] == "disc"
    assert first["score"] == pytest.approx(1, abs=2e-3)  # the item itself: its output was stored when it was added
    asym = client.post("/search?k=5&rerank=asymmetric", files={"file": ("q.png", query, "image/png")}).json()
    assert asym["results"][0]["id"] == first["id"] and asym["results"][0]["score"] > 1.5  # <h, b> over 16 bits
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)
    plain = client.post("/search?k=5&rerank=none", files={"file": ("q.png", query, "image/png")}).json()["results"]
    assert set(plain[0]) == {"id", "distance", "source", "label", "meta"}
    by_id = client.post("/search", json={"id": first["id"], "k": 5}).json()["results"]  # re-ranked by its stored output
    assert [h["id"] for h in by_id] == [h["id"] for h in body["results"]]  # as the search by its image
    assert [h["score"] for h in by_id] == [pytest.approx(h["score"], abs=2e-3) for h in body["results"]]
    by_id_plain = client.post("/search", json={"id": first["id"], "k": 5, "rerank": "none"}).json()["results"]
    assert [h["id"] for h in by_id_plain] == [h["id"] for h in plain]
    bad = client.post("/search", json={"id": first["id"], "oversample": 0})
    assert bad.status_code == 422 and "oversample" in bad.text
    col = client.app.state.collection
    for expand in (0, 2, 5):  # query expansion: passed through as the collection takes it (2: the default)
        got = client.post(f"/search?k=5&expand={expand}", files={"file": ("q.png", query, "image/png")}).json()
        want = col.search(str(shapes / "database" / "disc" / "disc-000.png"), k=5, expand=expand)[0]
        assert [(h["id"], h["score"]) for h in got["results"]] == [(h.id, pytest.approx(h.score, abs=1e-5)) for h in want]
        by_id_qe = client.post("/search", json={"id": first["id"], "k": 5, "expand": expand}).json()["results"]
        assert [h["id"] for h in by_id_qe] == [h.id for h in col.search_items([first["id"]], 5, expand=expand)[0]]
        if expand == 2:
            assert [h["score"] for h in got["results"]] == [h["score"] for h in body["results"]]
    for bad in (client.post("/search?expand=11", files={"file": ("q.png", query, "image/png")}),
                client.post("/search", json={"id": first["id"], "expand": -1})):  # fmt: skip
        assert bad.status_code == 422 and "expand" in bad.text
    assert client.post("/search?rerank=fancy", files={"file": ("q.png", query, "image/png")}).status_code == 422
    code = client.app.state.collection.codes_of([first["id"]])
    signs = np.where(np.unpackbits(code[0]) == 1, 1, -1).tolist()
    by_code = client.post("/search", json={"codes": signs, "k": 3, "radius": 4}).json()["results"]
    assert by_code[0]["id"] == first["id"] and all(h["distance"] <= 4 for h in by_code)
    assert client.get("/health").json() == {"status": "ok", "items": 60}
    stats = client.get("/stats").json()
    assert stats["items"] == 60 and stats["bits"] == 16 and stats["labels"] == {"disc": 20, "hstripes": 20, "vstripes": 20}


def test_a_collection_storing_features_searches_by_them_over_http(shapes_run, shapes, client, tmp_path):
    """``rerank=features`` (a collection made with features): a search by image (one, or a batch) and by id
    rescore by the backbone features' cosine, as the collection does; a collection without them is a 422."""
    query = (shapes / "database" / "disc" / "disc-000.png").read_bytes()
    with Collection.create(tmp_path / "f.hdc", shapes_run, features=True) as col:
        col.add(shapes / "database")
        want = col.search([shapes / "database" / "disc" / "disc-000.png"], 5, rerank="features")[0]
        with TestClient(create_app(col, TOKEN)) as c:
            r = c.post("/search?k=5&rerank=features", files={"file": ("q.png", query, "image/png")})
            assert r.status_code == 200, r.text
            hits = r.json()["results"]
            assert [h["id"] for h in hits] == [h.id for h in want]
            assert [h["score"] for h in hits] == [pytest.approx(h.score, abs=1e-5) for h in want]
            assert hits[0]["score"] == pytest.approx(1, abs=2e-3) and c.get("/stats").json()["features"] > 0
            files = [("files", ("a.png", query, "image/png"))] * 2
            batch = c.post("/search/batch?k=5&rerank=features", files=files).json()["results"]
            assert [[h["id"] for h in b] for b in batch] == [[h["id"] for h in hits]] * 2
            by_id = c.post("/search", json={"id": hits[0]["id"], "k": 5, "rerank": "features"}).json()["results"]
            assert [h["id"] for h in by_id] == [h["id"] for h in hits]
    r = client.post("/search?k=5&rerank=features", files={"file": ("q.png", query, "image/png")})
    assert r.status_code == 422 and "stores no features" in r.json()["detail"]


@pytest.mark.parametrize(
    ("request_", "status", "detail"),
    [
        (("post", "/search?k=0", {"files": {"file": ("q.png", b"x")}}), 422, "k must be in 1..100, got 0"),
        (("post", "/search?k=101", {"json": None}), 422, "k must be in 1..100, got 101"),
        (
            ("post", "/search", {"files": {"file": ("notes.txt", b"hello")}}),
            400,
            "notes.txt: not an image (or not a format Pillow reads)",
        ),
        (("post", "/search", {"files": {"file": ("e.png", b"")}}), 400, "e.png: empty file"),
        (
            ("post", "/search", {"files": {"file": ("big.png", "BOMB")}}),
            413,
            "big.png: 10000 x 10000 = 100,000,000 pixels, over the limit of 1,000,000 (max_pixels)",
        ),
        (
            ("post", "/search", {"files": {"file": ("huge.png", "HUGE")}}),
            413,
            "huge.png: 10,000,000,000 pixels, over Pillow's hard limit; refused unread as a possible decompression bomb",
        ),
        (
            ("post", "/search", {"files": {"file": ("fat.png", b"\x89PNG" + bytes(60_000))}}),
            413,
            "fat.png: over the upload limit of 0.05 MB",
        ),
        (("post", "/search", {"json": {"codes": [1] * 10}}), 422, "codes: 10 signs, the collection holds 16-bit codes"),
        (("post", "/search", {"json": {"codes": [2] * 16}}), 422, "codes: every sign must be -1 or 1"),
        (("post", "/search", {"json": {"id": 999999}}), 404, "no item 999999"),
        (("post", "/search", {"json": {"k": 3}}), 422, "give either codes or id"),
        (("get", "/items/999999", {}), 404, "no item 999999"),
        (("get", "/items/999999/image", {}), 404, "no item 999999"),
        (
            ("post", "/items", {"files": [("files", ("a.png", "PNG"))]}),
            401,
            "missing bearer token (Authorization: Bearer <token>)",
        ),
        (
            ("delete", "/items/1", {"headers": {"Authorization": "Bearer wrong"}}),
            403,
            "wrong bearer token (this route needs the write key)",
        ),
        (("delete", "/items/999999", {"headers": AUTH}), 404, "no item 999999"),
    ],
)
def test_bad_requests_get_one_clear_4xx(client, request_, status, detail):
    method, url, kw = request_
    if "files" in kw:  # fill in the crafted uploads
        fill = {"BOMB": png_claiming(10000, 10000), "HUGE": png_claiming(100000, 100000),
                "PNG": png(np.zeros((8, 8, 3), np.uint8))}  # fmt: skip
        files = kw["files"]
        if isinstance(files, dict):
            files = {k: (n, fill.get(d, d) if isinstance(d, str) else d) for k, (n, d) in files.items()}
        else:
            files = [(k, (n, fill.get(d, d) if isinstance(d, str) else d)) for k, (n, d) in files]
        kw = {**kw, "files": files}
    if kw.get("json", 0) is None:  # a JSON search with k out of range
        kw = {"json": {"id": 1, "k": 101}}
    r = getattr(client, method)(url, **kw)
    assert (r.status_code, r.json()) == (status, {"detail": detail})


def test_a_body_announced_over_every_limit_is_refused_before_it_is_read(client):
    r = client.post(
        "/search", content=b"x", headers={"content-type": "multipart/form-data; boundary=x", "content-length": str(10**10)}
    )
    assert r.status_code == 413 and r.json() == {"detail": "request body of 10,000,000,000 bytes is over the limit of 117,964"}


def test_a_truncated_image_is_a_400(client, shapes):
    data = (shapes / "database" / "disc" / "disc-001.png").read_bytes()
    r = client.post("/search", files={"file": ("cut.png", data[: len(data) // 2])})
    assert r.status_code == 400 and r.json()["detail"].startswith("cut.png: truncated or damaged image")


def test_writes_need_the_token_and_private_reads_too(collection, shapes):
    image = png(np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8))
    with Collection.open(collection) as col, TestClient(create_app(col, TOKEN)) as c:
        r = c.post("/items", files=[("files", ("a.png", image)), ("files", ("b.png", image))], headers=AUTH)
        assert r.status_code == 201 and len(r.json()["ids"]) == 2
        new = r.json()["ids"][0]
        item = c.get(f"/items/{new}").json()
        assert item["source"].startswith("collection:images/") and item["label"] is None
        thumb = c.get(f"/items/{new}/image")
        assert thumb.headers["content-type"] == "image/png" and Image.open(io.BytesIO(thumb.content)).size == (20, 20)
        assert c.delete(f"/items/{new}", headers=AUTH).json() == {"removed": 1}
        assert c.get(f"/items/{new}").status_code == 404
        assert c.delete(f"/items/{r.json()['ids'][1]}", headers=AUTH).status_code == 200
    with Collection.open(collection) as col, TestClient(create_app(col, TOKEN, private=True)) as c:
        assert c.get("/stats").status_code == 401 and c.get("/stats", headers=AUTH).status_code == 200
        assert c.get("/health").status_code == 200  # liveness stays open
    with Collection.open(collection) as col, TestClient(create_app(col, None)) as c:
        r = c.post("/items", files=[("files", ("a.png", image))], headers=AUTH)
        assert (r.status_code, r.json()["detail"]) == (403, "writes are disabled: the server runs without a write key")


def test_a_search_by_code_answers_alike_on_the_hot_path_and_through_the_route(collection):
    """``POST /search`` with JSON and no query string skips FastAPI's routing (``HotSearch``); with a query
    string the route answers: the same results, errors and key checks either way."""
    with Collection.open(collection) as col, TestClient(create_app(col, TOKEN, private=True)) as c:
        first = col.items(limit=1)[0].id
        bodies = [{"id": first, "k": 4}, {"codes": [1, -1] * 8, "k": 3}, {"codes": [1] * 10}, {"k": 3}, {"id": -1},
                  {"id": first, "filter": {"label": "nope"}}, {"id": first, "filter": {"bad key": 1}}]  # fmt: skip
        for body in bodies:
            hot = c.post("/search", json=body, headers=AUTH)
            routed = c.post("/search?unused=1", json=body, headers=AUTH)
            assert hot.status_code == routed.status_code
            drop = lambda r: {k: v for k, v in r.json().items() if k != "took_ms"}
            assert drop(hot) == drop(routed), body
        assert c.post("/search", json=bodies[0]).status_code == 401  # private: the read key, on the hot path too
        assert c.post("/search", content=b"{not json", headers=AUTH).status_code == 422
        assert c.get("/search").status_code == 405
        assert len(c.post("/search", json=bodies[0], headers=AUTH).json()["results"]) == 4


def test_nothing_outside_the_collection_is_served(collection, tmp_path):
    """A crafted row naming a stored image outside the folder, or a file with no thumbnail, is a 404."""
    with sqlite3.connect(collection / "items.sqlite") as db:
        code = db.execute("SELECT code FROM items LIMIT 1").fetchone()[0]
        db.execute("INSERT INTO items (id, code, source, label, added) VALUES (?, ?, ?, NULL, 0)",
                   (900001, code, "collection:../../../../etc/passwd"))  # fmt: skip
        db.execute("INSERT INTO items (id, code, source, label, added) VALUES (?, ?, ?, NULL, 0)",
                   (900002, code, str(tmp_path / "secret.png")))  # fmt: skip
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "secret.png")
    try:
        with Collection.open(collection) as col, TestClient(create_app(col, TOKEN)) as c:
            for item, words in ((900001, "outside the collection"), (900002, "lives outside the collection")):
                r = c.get(f"/items/{item}/image")
                assert r.status_code == 404 and words in r.json()["detail"]
            assert c.get("/items/..%2F..%2Fetc%2Fpasswd/image").status_code in (404, 422)
    finally:
        with sqlite3.connect(collection / "items.sqlite") as db:
            db.execute("DELETE FROM items WHERE id IN (900001, 900002)")


def test_adds_and_searches_at_once_then_a_restart_finds_every_acknowledged_add(collection):
    rng = np.random.default_rng(1)
    images = [png(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)) for _ in range(8)]
    acked, errors, stop = [], [], time.monotonic() + 3.0
    with Collection.open(collection) as col, TestClient(create_app(col, TOKEN)) as c:

        def writer(i: int) -> None:
            while time.monotonic() < stop:
                r = c.post("/items", files=[("files", (f"{i}.png", images[i]))], headers=AUTH)
                (acked.extend(r.json()["ids"]) if r.status_code == 201 else errors.append(r.text))

        def reader(i: int) -> None:
            while time.monotonic() < stop:
                r = c.post("/search?k=5", files={"file": ("q.png", images[i])})
                if r.status_code != 200:
                    errors.append(r.text)

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda f: f[0](f[1]), [(writer, 0), (writer, 1), (writer, 2), (reader, 3), (reader, 4), (reader, 5)]))
    assert not errors and len(acked) > 10
    with Collection.open(collection) as col, TestClient(create_app(col, TOKEN)) as c:  # the restart
        assert all(c.get(f"/items/{i}").status_code == 200 for i in acked)
        r = c.post("/search?k=1", files={"file": ("q.png", images[0])})
        assert r.json()["results"][0]["distance"] == 0
        for i in acked:
            col.remove([i])


def test_api_fuzzed_from_its_openapi_schema_never_5xx(collection, tmp_path):
    """Requests generated from the app's own OpenAPI schema (valid and invalid ones, every operation, with and
    without the token): never a server error. Bounded: 25 examples per operation and mode. On a copy: valid
    deletes do delete."""
    from hypothesis import given

    shutil.copytree(collection, tmp_path / "copy")
    col = Collection.open(tmp_path / "copy")
    app = create_app(col, TOKEN, limits=Limits(max_upload_mb=0.05, max_pixels=1_000_000, max_k=100),
                     snapshots=tmp_path / "snapshots")  # fmt: skip
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in api.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /search", "POST /items", "GET /items/{item_id}", "GET /items/{item_id}/image", "DELETE /items/{item_id}",
        "GET /stats", "GET /health", "GET /random", "POST /search/batch", "GET /items", "PATCH /items/{item_id}",
        "GET /livez", "GET /readyz", "GET /metrics", "POST /snapshots",
    }  # fmt: skip
    seen = []

    def fuzz(op, mode) -> None:
        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case) -> None:
            for headers in (None, AUTH):
                response = case.call(headers=headers)
                seen.append(response.status_code)
                assert response.status_code < 500, (op.method, op.path, response.status_code, response.text)

        check()

    try:
        for op in operations:
            fuzz(op, schemathesis.GenerationMode.POSITIVE)
            try:
                fuzz(op, schemathesis.GenerationMode.NEGATIVE)
            except Unsatisfiable:  # nothing to make invalid (GET /health takes no input)
                takes_nothing = not op.path_parameters and not op.query and (op.body is None or not op.body.items)
                assert takes_nothing or op.method == "get"
    finally:
        col.close()
    assert len(seen) > 100 and any(200 <= s < 300 for s in seen) and any(400 <= s < 500 for s in seen)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed (make test installs it)")
def test_the_page_in_a_real_browser(collection, shapes, tmp_path):
    """Upload a database image on the page; the grid shows k results, the first at distance 0, with each item's
    metadata; then the label filter: every result has the label chosen."""
    import uvicorn
    from playwright.sync_api import sync_playwright

    port = _free_port()
    shutil.copytree(collection, tmp_path / "copy")
    col = Collection.open(tmp_path / "copy")
    for h in col.items(limit=1000):
        col.update(h.id, {"shop": f"shop-{h.id % 3}"})
    server = uvicorn.Server(uvicorn.Config(create_app(col, TOKEN), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    artefacts = Path("test-artifacts")
    artefacts.mkdir(exist_ok=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])  # fmt: skip
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('stats').textContent.includes('60 items')")
            page.fill("#k", "7")
            page.set_input_files("#file", str(shapes / "database" / "vstripes" / "vstripes-004.png"))
            page.wait_for_selector("body[data-results]")
            hits = page.query_selector_all(".hit")
            assert len(hits) == 7 and hits[0].get_attribute("data-distance") == "0"
            page.wait_for_function(
                "Array.from(document.querySelectorAll('.hit img')).every(i => i.complete && i.naturalWidth > 0)"
            )
            assert "results for vstripes-004.png" in page.text_content("#status")
            shown = [(h.get_attribute("data-id"), h.query_selector(".meta").text_content()) for h in hits]
            assert all(meta == f"shop: shop-{int(i) % 3}" for i, meta in shown), shown
            hits[1].click()  # search by a result: the query's label is known, results get marked
            page.wait_for_function("document.querySelectorAll('.hit.relevant, .hit.irrelevant').length === 7")
            page.select_option("#filter", "disc")  # only discs, for a stripes query
            page.evaluate("delete document.body.dataset.results")
            page.fill("#k", "30")
            page.set_input_files("#file", str(shapes / "database" / "hstripes" / "hstripes-001.png"))
            page.wait_for_selector("body[data-results]")
            labels = [h.text_content() for h in page.query_selector_all(".hit .label")]
            assert labels == ["disc"] * 20, labels  # the 20 discs there are, and nothing else
            page.screenshot(path=str(artefacts / "service-page.png"), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        col.close()
    assert (artefacts / "service-page.png").stat().st_size > 1000


def test_each_route_has_its_own_body_limit_announced_or_chunked(client):
    """A JSON search is a few kilobytes: a larger one is refused before it is parsed, whether its length is announced
    or it arrives in chunks with none; a search by image may send one upload, no more."""
    big = b'{"codes": [' + b"1, " * 40_000 + b'1], "k": 5}'  # 120 KB: over the 64 KB JSON limit, under an upload's
    r = client.post("/search", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"] == f"request body of {len(big):,} bytes is over the limit of 65,536"

    def chunks():
        for a in range(0, len(big), 8192):
            yield big[a : a + 8192]

    r = client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and r.json() == {"detail": "request body over the limit of 65,536 bytes"}
    upload = b"\x89PNG" + bytes(120_000)  # over one upload (0.05 MB) with its form
    r = client.post("/search", files={"file": ("q.png", upload)})
    assert r.status_code == 413 and "over the limit of 117,964" in r.json()["detail"]
    # a small JSON search still works
    assert client.post("/search", json={"id": 1, "k": 2}).status_code == 200


def test_json_nested_too_deeply_is_a_422_not_a_500(client):
    deep = b"[" * 30_000 + b"]" * 30_000
    r = client.post("/search", content=deep, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()) == (422, {"detail": "body: JSON nested too deeply"})


def test_no_response_shows_a_server_path(client, shapes_run, shapes):
    stats = client.get("/stats").json()
    assert stats["run"] == shapes_run.name and "/" not in stats["run"]
    assert str(shapes_run.parent) not in client.get("/stats").text
    # the items were added from files on the server's disk: a client sees their file names, not its folders
    query = (shapes / "database" / "disc" / "disc-003.png").read_bytes()
    hits = client.post("/search?k=60", files={"file": ("q.png", query, "image/png")}).json()["results"]
    mine = next(h for h in hits if h["source"] == "disc-003.png")  # (other discs may share its code)
    assert mine["distance"] == 0 and all("/" not in h["source"] for h in hits)
    assert {h["source"] for h in hits} == {p.name for p in (shapes / "database").rglob("*.png")}
    texts = [client.get(f"/items/{mine['id']}").text, client.get("/random").text]
    texts.append(client.post("/search", json={"id": mine["id"], "k": 60}).text)
    assert not any(str(shapes) in t or str(shapes.parent) in t for t in texts)
    assert client.get(f"/items/{mine['id']}").json()["source"] == "disc-003.png"


def _serve(collection, *args, timeout=60):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "hashdistill", "serve", str(collection), *args], capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def test_serve_refuses_a_bad_port_and_a_busy_one_in_one_line_before_claiming_to_serve(collection):
    r = _serve(collection, "--port", "70000")
    assert r.returncode == 2 and "--port" in r.stderr and "65535" in r.stderr and "serving" not in r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = _serve(collection, "--port", str(port))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"hashdistill: error: cannot listen on 127.0.0.1:{port}: ")


def test_the_first_search_after_start_is_as_quick_as_the_next(collection):
    """``serve`` warms the encoder and the index (in the background; /readyz says when): then the first search
    pays no lazy load."""
    col = Collection.open(collection)
    try:
        col.warm_up()
        t0 = time.perf_counter()
        col.search(codes=PackedCodes(np.zeros((1, col.bits // 8), np.uint8)), k=5)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        col.search(codes=PackedCodes(np.zeros((1, col.bits // 8), np.uint8)), k=5)
        second = time.perf_counter() - t0
    finally:
        col.close()
    assert first < 0.05 and first < 20 * second + 0.01


def test_a_graceful_stop_writes_the_added_items_vectors_into_the_vector_file(collection, tmp_path):
    """``serve`` stopped by SIGTERM closes its collection: the vectors of the items added over HTTP go into
    ``vectors.hdv`` (the next open maps it as it is, instead of writing it again from the item table)."""
    import shutil
    import signal
    import subprocess
    import sys
    import urllib.request

    from hashdistill.index.vectors import VectorFile

    folder = tmp_path / "c.hdc"
    shutil.copytree(collection, folder)
    before = len(VectorFile(folder / "vectors.hdv"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "hashdistill", "serve", str(folder), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the server did not become ready"
            time.sleep(0.2)
        image = png(np.random.default_rng(1).integers(0, 256, (20, 20, 3), dtype=np.uint8))
        boundary = "hd-boundary"
        body = (
            b"".join(
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{i}.png"\r\n'
                f"Content-Type: image/png\r\n\r\n".encode()
                + image
                + b"\r\n"
                for i in range(3)
            )
            + f"--{boundary}--\r\n".encode()
        )
        key = (folder / "token").read_text().strip()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/items", data=body, method="POST", headers={
            "Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={boundary}"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 201
        assert len(VectorFile(folder / "vectors.hdv")) == before  # held in memory while serving
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM), proc.stderr.read()  # uvicorn re-raises it
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(VectorFile(folder / "vectors.hdv")) == before + 3
    written = (folder / "vectors.hdv").stat().st_mtime_ns
    Collection.open(folder).close()
    assert (folder / "vectors.hdv").stat().st_mtime_ns == written
