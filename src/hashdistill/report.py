"""One report for several trained runs: ``write_report(runs, out_dir)`` writes ``report.html`` (self-contained:
every picture inlined) and ``report.md`` (pictures as files beside it) with the metrics table, the
robustness table, PR and P@top-M curves, proxy heatmaps, per-bit histograms of h, the sensitivity curves
and a grid of example queries with their top-10 results (relevant ones framed green, others red)."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from . import _io, plots
from .codes import hamming
from .errors import HashdistillError
from .labels import shares_label
from .methods import method_class
from .metrics import precision_at_k, precision_recall_curve
from .robustness import as_run, left_out, robustness, sensitivity
from .run import Run
from .tables import by_run, results_table

TOP_M = (1, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)


def _thumb(image: np.ndarray, size: int, colour: tuple[int, int, int] | None) -> Image.Image:
    if image.ndim == 3 and image.shape[0] in (1, 3):  # (C, H, W) -> (H, W, C)
        image = np.moveaxis(image, 0, -1).squeeze()
    img = Image.fromarray(image)
    img = img.convert("RGB").resize((size, size), Image.NEAREST)
    return ImageOps.expand(img, border=3, fill=colour or (255, 255, 255))


def query_grid(run: Run, path: Path, n_queries: int = 6, k: int = 10, size: int = 56, seed: int = 0) -> Path:
    """A PNG: ``n_queries`` seeded example queries (first column, white frame) and their top-``k`` database
    images by Hamming distance (green frame: relevant, red: not)."""
    qcodes, db_codes = run.codes("query"), run.codes("database")
    picks = np.sort(np.random.default_rng(seed).choice(len(qcodes), min(n_queries, len(qcodes)), replace=False))
    query, database = run.data.query, run.data.database
    rows = []
    for i in picks:
        d = hamming(qcodes[i : i + 1], db_codes)[0]
        top = np.argsort(d, kind="stable")[:k]
        rel = shares_label(query.labels[i : i + 1], database.labels[top])[0]
        cells = [_thumb(np.asarray(query.images[i]), size, None)]
        cells += [_thumb(np.asarray(database.images[j]), size, (40, 160, 60) if r else (200, 40, 40)) for j, r in zip(top, rel)]
        rows.append(cells)
    cell = rows[0][0].size[0] + 4
    grid = Image.new("RGB", (cell * (k + 1), cell * len(rows)), (255, 255, 255))
    for r, cells in enumerate(rows):
        for c, img in enumerate(cells):
            grid.paste(img, (c * cell + 2, r * cell + 2))
    _io.atomic_write(path, lambda f: grid.save(f, format="PNG"))
    return path


def _curves(run: Run) -> tuple[tuple[np.ndarray, np.ndarray], tuple[list[int], np.ndarray]]:
    q, db = run.codes("query"), run.codes("database")
    ql, dbl = run.data.query.labels, run.data.database.labels
    ms = [m for m in TOP_M if m <= len(db)]
    return precision_recall_curve(q, db, ql, dbl), (ms, precision_at_k(q, db, ql, dbl, ks=ms))


def _inline(path: Path) -> str:
    mime = "image/svg+xml" if path.suffix == ".svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def write_report(
    runs: list[str | os.PathLike | Run], out_dir: str | os.PathLike, deformations: list[str] | None = None,
    sensitivity_grid: tuple[float, ...] | None = None, seed: int = 0, title: str = "hashdistill report",
) -> dict[str, Path]:  # fmt: skip
    """Write the report for ``runs`` into ``out_dir``; returns the paths of ``html`` and ``md``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = [as_run(r) for r in runs]
    names = [r.name for r in loaded]
    if len(set(names)) != len(names):
        raise HashdistillError(f"runs must have distinct folder names, got {', '.join(names)}")
    sections: list[tuple[str, str, list[Path]]] = []  # (heading, markdown text, pictures)

    metrics = []
    for r in loaded:
        method = r.config.method
        sdh = method.self_distill or method_class(method.name).views == 2  # the switch, or DHD's own L_SdH
        view = "T_T + T_S" if sdh else {"student": "T_S"}.get(method.train_view, "T_T")
        metrics.append({"run": r.name, "method": method.name, "bits": r.bits, "SdH": sdh, "views": view,
                        **{k: v for k, v in r.metrics.items() if k.startswith(("map", "p_at"))}})  # fmt: skip
    cols = list(dict.fromkeys(k for m in metrics for k in m))
    sections.append(("Metrics", results_table(metrics, cols), []))

    if deformations:
        rows = robustness(loaded, deformations, seed)
        table = by_run(rows, "deformation", "map")
        text = f"mAP@{loaded[0].data.topk} with each deformation applied to the queries only (seed {seed}).\n\n"
        if skipped := left_out(deformations, rows):
            text += f"Left out, as they cannot change one-channel (grey) queries: {', '.join(skipped)}.\n\n"
        text += results_table(table, ["deformation", *names]) if table else ""
        sections.append(("Robustness to unseen deformations", text, []))
    pr, topm = {}, {}
    for r in loaded:
        pr[r.name], topm[r.name] = _curves(r)
    pictures = plots.pr_curves(pr, out / "pr-curves") + plots.topm_curves(topm, out / "topm-curves")
    sections.append(("Precision-recall and P@top-M", "", [p for p in pictures if p.suffix == ".png"]))
    if sensitivity_grid:
        rows = sensitivity(loaded, sensitivity_grid, seed)
        pictures = plots.sensitivity_curves(rows, out / "sensitivity")
        sections.append(("Sensitivity to transformations", "Mean Hamming distance between each query's clean code and "
                         "its code under the run's teacher group with every probability scaled by s.", pictures[:1]))  # fmt: skip
    for r in loaded:
        pictures = []
        if r.proxies is not None:
            pictures += plots.proxy_heatmap(r.proxies.float().numpy(), r.data.class_names, out / f"{r.name}-proxies")[:1]
        pictures += plots.bit_histograms(
            r.h("query"), out / f"{r.name}-bits", title=f"{r.name}: continuous codes h of the queries"
        )[:1]
        pictures.append(query_grid(r, out / f"{r.name}-queries.png", seed=seed))
        text = ("Proxy similarity (where the method has proxies), per-bit histograms of h, and example queries (first "
                "column) with their top-10 results: green relevant, red not.")  # fmt: skip
        purity = r.purity  # DistillHash: its distilled pairs' purity against the fraction kept
        if "curve" in purity:
            pictures += plots.purity_curves({r.name: purity["curve"]}, out / f"{r.name}-purity", purity.get("initial"))[:1]
            text += " " + _purity_line(purity)
        sections.append((f"Run {r.name}", text, pictures))

    md = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, text, pics in sections:
        md += [f"## {heading}", "", text, "", *[f"![{p.stem}]({p.name})" for p in pics], ""]
        body.append(f"<h2>{html.escape(heading)}</h2>")
        body.append(_markdown_table_html(text))
        body += [f'<img alt="{html.escape(p.stem)}" src="{_inline(p)}">' for p in pics]
    page = _PAGE.format(title=html.escape(title), body="\n".join(body))
    paths = {"html": out / "report.html", "md": out / "report.md"}
    _io.write_text(paths["html"], page)
    _io.write_text(paths["md"], "\n".join(md))
    return paths


def _purity_line(purity: dict) -> str:
    """One sentence on a DistillHash run's pairs: initial and distilled, each side's count and purity."""
    parts = []
    for stage in ("initial", "distilled"):
        p = purity[stage]
        parts.append(f"{stage} {p['similar']:,} similar pairs at purity {p['similar_purity']:.3f} and {p['dissimilar']:,} "
                     f"dissimilar at {p['dissimilar_purity']:.3f}")  # fmt: skip
    return f"Pairs ({purity['curve']['rule']} rule): " + "; ".join(parts) + "; the curve varies the margin."


def _markdown_table_html(text: str) -> str:
    """The report's Markdown (paragraphs and pipe tables) as HTML."""
    out, table = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                table.append([html.escape(c.strip()) for c in line.strip("|").split("|")])
            continue
        if table:
            head, *rest = table
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rest) + "</table>")  # fmt: skip
            table = []
        if line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "\n".join(out)


# the script records how many images decoded (data-images="loaded/total"), for headless checks
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
img {{ max-width: 100%; display: block; margin: 0.5em 0; }}
</style></head>
<body>
{body}
<script>
window.addEventListener("load", () => {{
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.images = ok + "/" + imgs.length;
}});
</script>
</body></html>
"""

__all__ = ["query_grid", "write_report"]
