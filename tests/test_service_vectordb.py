"""The service as a small vector database: metadata and filters, pages, batches, liveness and readiness,
Prometheus metrics, keys re-read from their files, snapshots taken during writes and restored."""

import io
import json
import re
import shutil
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from hashdistill.cli import app as cli
from hashdistill.cli import main
from hashdistill.collection import Collection, CollectionError
from hashdistill.serve import create_app

KEY = "write-key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}
runner = CliRunner()


@pytest.fixture(scope="module")
def folder(shapes_run, shapes, tmp_path_factory):
    """The shapes database (60 images of three classes), each image with a shop (a, b or c) as metadata."""
    folder = tmp_path_factory.mktemp("vdb") / "shapes.hdc"
    with Collection.create(folder, shapes_run) as col:
        files = sorted((shapes / "database").rglob("*.png"))
        col.add([str(f) for f in files], [f.parent.name for f in files], metadata=[{"shop": "abc"[i % 3]} for i in
                                                                                    range(len(files))])  # fmt: skip
    return folder


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def signs(col: Collection, item: int) -> list[int]:
    return (np.unpackbits(col.codes_of([item]).array[0]).astype(int) * 2 - 1).tolist()


def test_metadata_filters_pages_and_patch(folder, shapes):
    with Collection.open(folder) as col, TestClient(create_app(col, KEY)) as c:
        first = col.items(limit=1)[0].id
        code = signs(col, first)
        for spec in ({"label": "vstripes"}, {"meta.shop": {"in": ["a", "c"]}}, {"label": "disc", "meta.shop": "b"}):
            r = c.post("/search", json={"codes": code, "k": 30, "filter": spec})
            assert r.status_code == 200, r.text
            got = [(h["id"], h["distance"]) for h in r.json()["results"]]
            want = [(h.id, h.distance) for h in col.search(codes=[code], k=30, where=spec)[0]]
            assert got == want and got  # the library's filtered search, itself checked against brute force
            for h in r.json()["results"]:
                assert h["label"] == spec.get("label", h["label"])
                shops = spec.get("meta.shop", {"in": "abc"})
                assert h["meta"]["shop"] in (shops["in"] if isinstance(shops, dict) else [shops])
        # by image, the filter as a query parameter
        query = (shapes / "query" / "disc").glob("*.png").__next__().read_bytes()
        r = c.post("/search?k=50&filter=" + json.dumps({"label": "hstripes"}), files={"file": ("q.png", query)})
        assert r.status_code == 200 and {h["label"] for h in r.json()["results"]} == {"hstripes"}
        assert len(r.json()["results"]) == 20
        # pages: every item once, by id; next is null on the last page
        seen, after = [], 0
        while True:
            page = c.get(f"/items?after={after}&limit=7").json()
            seen += [i["id"] for i in page["items"]]
            if page["next"] is None:
                break
            after = page["next"]
        assert seen == [h.id for h in col.items(limit=1000)] and len(seen) == 60
        # PATCH merges; null removes a key; the change shows in filtered searches at once
        r = c.patch(f"/items/{first}", json={"meta": {"shop": "z", "colour": "red"}}, headers=AUTH)
        assert r.status_code == 200 and r.json()["meta"] == {"shop": "z", "colour": "red"}
        hits = c.post("/search", json={"codes": code, "filter": {"meta.shop": "z"}}).json()["results"]
        assert [h["id"] for h in hits] == [first]
        assert c.patch(f"/items/{first}", json={"meta": {"colour": None, "shop": "abc"[0]}}, headers=AUTH).json()["meta"] == {
            "shop": "a"
        }
        assert c.patch(f"/items/{first}", json={"meta": {"x": 1}}).status_code == 401
        for body, status, detail in [
            ({"codes": code, "filter": {"colour": "red"}}, 422, "filter: unknown field 'colour' (label, or meta.<key>)"),
            ({"codes": code, "filter": {"label": {"in": []}}}, 422, "filter.label.in: 1 to 256 values, got 0"),
        ]:
            r = c.post("/search", json=body)
            assert (r.status_code, r.json()["detail"]) == (status, detail)
        r = c.post("/search?filter=%7Bnope", files={"file": ("q.png", query)})
        assert r.status_code == 422 and r.json()["detail"].startswith("filter: not JSON")
        r = c.patch(f"/items/{first}", json={"meta": {"bad key": 1}}, headers=AUTH)
        assert r.status_code == 422 and "key 'bad key'" in r.json()["detail"]
        assert c.patch("/items/987654", json={"meta": {"a": 1}}, headers=AUTH).status_code == 404
        assert c.get("/items?limit=1001").status_code == 422


def test_uploads_carry_metadata(folder):
    rng = np.random.default_rng(3)
    images = [png(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)) for _ in range(2)]
    with Collection.open(folder) as col, TestClient(create_app(col, KEY)) as c:
        files = [("files", ("a.png", images[0])), ("files", ("b.png", images[1]))]
        meta = json.dumps([{"shop": "up", "n": 1}, {"shop": "up", "n": 2}])
        r = c.post("/items", files=files, data={"metadata": meta}, headers=AUTH)
        assert r.status_code == 201, r.text
        ids = r.json()["ids"]
        assert [c.get(f"/items/{i}").json()["meta"] for i in ids] == [{"n": 1, "shop": "up"}, {"n": 2, "shop": "up"}]
        r = c.post("/items", files=files[:1], data={"metadata": "[{}, {}]"}, headers=AUTH)
        assert r.status_code == 422 and "a list of 1; got 2 objects" in r.json()["detail"]
        r = c.post("/items", files=files[:1], data={"metadata": "{oops"}, headers=AUTH)
        assert r.status_code == 422 and r.json()["detail"].startswith("metadata: not JSON")
        for i in ids:
            assert c.delete(f"/items/{i}", headers=AUTH).status_code == 200


def test_batches_answer_each_query_as_alone(folder, shapes):
    with Collection.open(folder) as col, TestClient(create_app(col, KEY)) as c:
        items = [h.id for h in col.items(limit=5)]
        searches = [{"codes": signs(col, items[0]), "k": 4}, {"id": items[1], "k": 6, "filter": {"label": "disc"}},
                    {"id": items[2], "radius": 3}]  # fmt: skip
        r = c.post("/search/batch", json={"searches": searches})
        assert r.status_code == 200, r.text
        alone = [c.post("/search", json=s).json()["results"] for s in searches]
        assert r.json()["results"] == alone and [len(x) for x in alone[:2]] == [4, 6]
        # images in one request, encoded as one batch, equal one search each
        queries = sorted((shapes / "query").rglob("*.png"))[:5]
        files = [("files", (q.name, q.read_bytes())) for q in queries]
        r = c.post("/search/batch?k=5", files=files)
        assert r.status_code == 200, r.text
        one_by_one = [c.post("/search?k=5", files={"file": (q.name, q.read_bytes())}).json()["results"] for q in queries]
        assert r.json()["results"] == one_by_one
        for body, detail in [
            ({"searches": []}, "searches: 1 to 64 in one batch, got 0"),
            ({"searches": [{"id": items[0]}] * 65}, "searches: 1 to 64 in one batch, got 65"),
            ({"searches": [{"id": items[0]}, {"id": 987654}]}, "searches.1: no item 987654"),
            ({"searches": [{"id": items[0], "filter": {"x": 1}}]}, "searches.0: filter: unknown field 'x'"),
        ]:
            r = c.post("/search/batch", json=body)
            assert r.status_code in (404, 422) and r.json()["detail"].startswith(detail), r.text


def test_liveness_readiness_and_metrics(folder):
    with Collection.open(folder) as col:
        release = threading.Event()
        warm = col.warm_up

        def slow_warm_up():
            release.wait(30)
            warm()

        col.warm_up = slow_warm_up
        with TestClient(create_app(col, KEY, warm_up=True)) as c:
            assert c.get("/livez").json() == {"status": "alive"}
            assert c.get("/readyz").status_code == 503  # the model is loaded; the warm-up not done
            release.set()
            for _ in range(100):
                if c.get("/readyz").status_code == 200:
                    break
                time.sleep(0.05)
            assert c.get("/readyz").json() == {"status": "ready", "items": len(col)}
            first = col.items(limit=1)[0].id
            for _ in range(3):
                assert c.post("/search", json={"id": first}).status_code == 200
            assert c.get(f"/items/{first}").status_code == 200
            assert c.get("/items/987654").status_code == 404
            text = c.get("/metrics").text

    def value(name: str, **labels: str) -> float:
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            m = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
            if m and ",".join(sorted(m.group(1).split(","))) == want:
                return float(m.group(2))
        raise AssertionError(f"{name} {labels} not in /metrics")

    assert value("hashdistill_requests_total", method="POST", route="/search", status="200") == 3
    assert value("hashdistill_requests_total", method="GET", route="/items/{item_id}", status="404") == 1
    assert value("hashdistill_request_seconds_count", route="/search") == 3
    assert re.search(r"^hashdistill_items 60\.0$", text, re.M)
    assert re.search(r'^hashdistill_collection_info\{.*bits="16".*\} 1\.0$', text, re.M)


def test_freeze_gc_moves_what_is_alive_once_ready_out_of_the_collectors_reach(folder):
    """``hashdistill serve`` freezes the objects alive once warm (``gc.freeze``): a full collection, which took
    30-45 ms over the model and the libraries, no longer walks them."""
    import gc

    assert gc.get_freeze_count() == 0
    try:
        with Collection.open(folder) as col, TestClient(create_app(col, KEY, freeze_gc=True)) as c:
            for _ in range(100):
                if c.get("/readyz").status_code == 200:
                    break
                time.sleep(0.05)
            assert c.get("/readyz").status_code == 200
            assert gc.get_freeze_count() > 10_000  # the app, the collection, torch and numpy's objects
            assert c.post("/search", json={"id": col.items(limit=1)[0].id}).status_code == 200
    finally:
        gc.unfreeze()  # (the test process is not a server)


def test_keys_are_read_from_files_and_rotate_without_a_restart(folder, tmp_path):
    write, read = tmp_path / "write", tmp_path / "read"
    write.write_text("w1\n")
    read.write_text("r1\n")
    with Collection.open(folder) as col, TestClient(create_app(col, write, private=True, read_token=read)) as c:
        first = col.items(limit=1)[0].id

        def status(method: str, url: str, key: str | None, **kw) -> int:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            return getattr(c, method)(url, headers=headers, **kw).status_code

        patch = {"json": {"meta": {"shop": "a"}}}
        assert status("get", "/stats", None) == 401
        assert status("get", "/stats", "r1") == 200 and status("get", "/stats", "w1") == 200  # the write key reads too
        assert status("patch", f"/items/{first}", "r1", **patch) == 403  # the read key never writes
        assert status("patch", f"/items/{first}", "w1", **patch) == 200
        write.write_text("w2\n")  # rotated: the old key is refused at once, the new one accepted
        read.write_text("r2-longer\n")
        assert status("patch", f"/items/{first}", "w1", **patch) == 403
        assert status("patch", f"/items/{first}", "w2", **patch) == 200
        assert status("get", "/stats", "r1") == 403 and status("get", "/stats", "r2-longer") == 200
        write.unlink()  # a vanished key file lets nothing through
        assert status("patch", f"/items/{first}", "w2", **patch) == 403
        assert c.get("/livez").status_code == 200 and c.get("/readyz").status_code == 200  # probes stay open


def error_line(capsys, args: list[str]) -> str:
    """The one line ``hashdistill ARGS`` prints on stderr, run as the command line does (status 1)."""
    capsys.readouterr()
    assert main(args) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hashdistill: error: "), lines
    return lines[0]


def test_a_snapshot_taken_during_writes_restores_every_acknowledged_item(folder, tmp_path, capsys):
    work = tmp_path / "work.hdc"
    shutil.copytree(folder, work)
    snaps = tmp_path / "snaps"
    rng = np.random.default_rng(5)
    images = [png(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(6)]
    acked, errors, stop = [], [], threading.Event()
    with Collection.open(work) as col, TestClient(create_app(col, KEY, snapshots=snaps)) as c:

        def writer() -> None:
            i = 0
            while not stop.is_set():
                r = c.post("/items", files=[("files", (f"{i}.png", images[i % 6]))], headers=AUTH)
                if r.status_code != 201:
                    errors.append(r.text)
                acked.append((time.monotonic(), r.json()["ids"][0]))
                if i % 3 == 2:  # removals too: their files must not vanish from a snapshot being copied
                    c.delete(f"/items/{r.json()['ids'][0]}", headers=AUTH)
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.5)
        before = time.monotonic()
        r = c.post("/snapshots", headers=AUTH)
        stop.set()
        t.join()
        assert r.status_code == 201 and not errors, (r.text, errors[:1])
        assert c.post("/snapshots").status_code == 401
    name = r.json()["name"]
    done_before = [i for t_ack, i in acked if t_ack < before]
    assert len(done_before) >= 3
    restored = tmp_path / "restored.hdc"
    out = runner.invoke(cli, ["collection", "restore", str(snaps / name), str(restored)])
    assert out.exit_code == 0, out.output
    with Collection.open(restored) as back:
        assert len(back) == r.json()["items"]
        present = {h.id for h in back.items(limit=1000)}
        removed = {i for k, (_, i) in enumerate(acked) if k % 3 == 2}
        assert {i for i in done_before if i not in removed} <= present
        for h in back.items(limit=1000):
            assert back.image(h.id).ndim >= 2  # every row finds its image
    assert not (restored / "token").exists()  # keys are never in a snapshot
    # a damaged snapshot is refused before anything is written, naming the file
    damaged = snaps / name / "items.sqlite"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped
    damaged.write_bytes(bytes(data))
    line = error_line(capsys, ["collection", "restore", str(snaps / name), str(tmp_path / "again.hdc")])
    assert line.endswith(f"{snaps / name}: items.sqlite does not match its checksum (damaged)")
    assert not (tmp_path / "again.hdc").exists()
    with pytest.raises(CollectionError, match="not a snapshot"):
        Collection.restore(tmp_path, tmp_path / "x")


def test_a_snapshot_leaves_out_an_image_still_being_written(folder, tmp_path):
    """A stored image is written to a temporary and renamed: copying a temporary that vanishes mid-copy failed the
    snapshot (seen under concurrent adds), and one that stays would be a file no row names."""
    work = tmp_path / "work.hdc"
    shutil.copytree(folder, work)
    in_flight = work / "images" / ".0123abcd.png.x1y2z3.tmp"
    in_flight.write_bytes(b"half an image")
    with Collection.open(work) as col:
        manifest = col.snapshot(tmp_path / "snap")
    assert manifest["files"] and not [f for f in manifest["files"] if f.endswith(".tmp")]
    assert not list((tmp_path / "snap").rglob("*.tmp"))
    with Collection.restore(tmp_path / "snap", tmp_path / "back.hdc") as back:
        assert len(back) == manifest["items"] == 60


def test_cli_filters_metadata_lists_and_snapshots(folder, shapes, tmp_path, capsys):
    work = tmp_path / "c.hdc"
    shutil.copytree(folder, work)
    extra = tmp_path / "extra"
    extra.mkdir()
    Image.fromarray(np.full((48, 48, 3), 200, np.uint8)).save(extra / "grey.png")
    r = runner.invoke(cli, ["collection", "add", str(work), str(extra), "--metadata", '{"shop": "cli"}'])
    assert r.exit_code == 0, r.output
    query = next((shapes / "query" / "disc").glob("*.png"))
    r = runner.invoke(cli, ["search", str(work), "--image", str(query), "-k", "100", "--json", "--filter",
                            '{"meta.shop": "cli"}'])  # fmt: skip
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output)["queries"][0]["results"]
    assert [h["meta"] for h in hits] == [{"shop": "cli"}] and hits[0]["source"].endswith("grey.png")
    assert "--filter: not JSON" in error_line(capsys, ["search", str(work), "--image", str(query), "--filter", "{label"])
    line = error_line(capsys, ["search", str(work), "--image", str(query), "--filter", '{"size": 1}'])
    assert line == "hashdistill: error: filter: unknown field 'size' (label, or meta.<key>)"
    r = runner.invoke(cli, ["collection", "list", str(work), "--after", "55", "--limit", "3", "--json"])
    page = json.loads(r.output)
    assert [i["id"] for i in page["items"]] == [56, 57, 58] and page["next"] == 58
    r = runner.invoke(cli, ["collection", "snapshot", str(work), str(tmp_path / "snap")])
    assert r.exit_code == 0 and "61 items" in r.output, r.output
    line = error_line(capsys, ["collection", "snapshot", str(work), str(tmp_path / "snap")])
    assert line == f"hashdistill: error: {tmp_path / 'snap'}: already exists (a snapshot goes into a new folder)"
