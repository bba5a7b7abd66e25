"""The DHD paper's Table 2 and Table 3 rebuilt from ``quality.py`` result rows on one feature set.

Row labels (the ``method`` field of a result row): ``NAME`` trains on the teacher group T_T (Table 2),
``NAME-ts`` on the student group T_S only (Table 3, "-SdH"), ``NAME+sdh`` with self-distillation
(Table 3, "+SdH": the method's loss on T_T, L_SdH pulling T_S to it).
"""

from __future__ import annotations

from typing import Any

SHALLOW = ("lsh", "pcah", "pcarr", "sh", "itq", "sdh", "ksh")
BASELINES = (
    "cnnh",
    "dnnh",
    "dhn",
    "hashnet",
    "dch",
    "dpn",
    "csq",
    "dpsh",
    "dsh",
    "dtsh",
    "orthohash",
    "greedyhash",
    "dsdh",
    "adsh",
    "hyp2",
)
DHD_ABLATIONS = ("dhd-hp", "dhd-hp-bceq")
TABLE2_BITS = (16, 32, 64)
TABLE3_BITS = (16, 64)


def jobs() -> list[tuple[str, list[str], tuple[int, ...]]]:
    """(row label, config overrides, bit lengths) of every deep row of the two tables."""
    out = [(m, [f"method={m}"], TABLE2_BITS) for m in (*BASELINES, "dhd")]
    for m in (*BASELINES, *DHD_ABLATIONS):
        if m in DHD_ABLATIONS:
            out.append((m, [f"method={m}"], TABLE3_BITS))
        out.append((f"{m}-ts", [f"method={m}", "method.train_view=student"], TABLE3_BITS))
        out.append((f"{m}+sdh", [f"method={m}", "method.self_distill=true"], TABLE3_BITS))
    return out


def method_of(label: str) -> str:
    """The method of a row label: ``dpn``, ``dpn-ts`` and ``dpn+sdh`` are all ``dpn``'s rows."""
    return label.removesuffix("-ts").removesuffix("+sdh")


def _rows_by_label(rows: list[dict[str, Any]], features: str) -> dict[tuple[str, int], dict[str, Any]]:
    """The rows on ``features`` of one seed (the lowest there, 0 for a default comparison), by (label, bits). The
    tables compare one seed; rows of other seeds (``--seeds``) go into the results' mean ± sd summary instead of
    overwriting these."""
    on = [r for r in rows if r["features"] == features]
    seed = min((r.get("seed", 0) for r in on), default=0)
    return {(r["method"], r["bits"]): r for r in on if r.get("seed", 0) == seed}


def _value(rows: dict[tuple[str, int], dict[str, Any]], label: str, bits: int, metric: str) -> float | None:
    row = rows.get((label, bits))
    return None if row is None else row.get(metric)


def _cells(values: list[float | None], best: float | None) -> list[str]:
    return ["-" if v is None else (f"**{v:.4f}**" if best is not None and v == best else f"{v:.4f}") for v in values]


def table2(rows: list[dict[str, Any]], features: str, metric: str) -> tuple[str, list[str]]:
    """Markdown of Table 2 (every method at 16/32/64 bits, the best deep row per column in bold) and the
    statements on the paper's claim that DHD is best at every bit length."""
    by = _rows_by_label(rows, features)
    methods = [m for m in (*SHALLOW, *BASELINES, "dhd") if any((m, b) in by for b in TABLE2_BITS)]
    deep = [m for m in methods if m not in SHALLOW]
    best = {b: max((v for m in deep if (v := _value(by, m, b, metric)) is not None), default=None) for b in TABLE2_BITS}
    lines = [f"| method | kind | {' | '.join(f'{b} bits' for b in TABLE2_BITS)} |", "|---|---|" + "---|" * len(TABLE2_BITS)]
    for m in methods:
        values = [_value(by, m, b, metric) for b in TABLE2_BITS]
        cells = _cells(values, None) if m in SHALLOW else [_cells([v], best[b])[0] for v, b in zip(values, TABLE2_BITS)]
        lines.append(f"| {m} | {'shallow' if m in SHALLOW else 'deep'} | " + " | ".join(cells) + " |")
    claims = []
    for b in TABLE2_BITS:
        dhd = _value(by, "dhd", b, metric)
        if dhd is None or best[b] is None:
            continue
        top = max(deep, key=lambda m: _value(by, m, b, metric) or -1)
        if top == "dhd":
            runner = max((m for m in deep if m != "dhd"), key=lambda m: _value(by, m, b, metric) or -1, default=None)
            gap = dhd - (_value(by, runner, b, metric) or 0) if runner else 0.0
            claims.append(f"{b} bits: DHD is best ({dhd:.4f}; next {runner} by {gap:+.4f}).")
        else:
            claims.append(f"{b} bits: DHD is **not** best: {top} {_value(by, top, b, metric):.4f} vs DHD {dhd:.4f}.")
    return "\n".join(lines) + "\n", claims


def table3(rows: list[dict[str, Any]], features: str, metric: str) -> tuple[str, list[str]]:
    """Markdown of Table 3 (each method trained on T_T, on T_S only, and with SdH, at 16 and 64 bits) and
    the statements on the paper's claims (T_S alone below T_T; SdH lifting each method)."""
    by = _rows_by_label(rows, features)
    heads = [f"{name} {b}" for name in ("T_T", "-SdH (T_S)", "+SdH") for b in TABLE3_BITS] + [
        f"SdH gain {b}" for b in TABLE3_BITS
    ]
    lines = ["| method | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    claims: list[str] = []
    measured = 0
    versus_tt: list[tuple[str, int, float, float]] = []  # (method, bits, T_T, +SdH)
    for m in (*BASELINES, *DHD_ABLATIONS):
        tt = [_value(by, m, b, metric) for b in TABLE3_BITS]
        ts = [_value(by, f"{m}-ts", b, metric) for b in TABLE3_BITS]
        sd = [_value(by, f"{m}+sdh", b, metric) for b in TABLE3_BITS]
        if all(v is None for v in ts + sd):
            continue
        gain = [None if a is None or c is None else c - a for a, c in zip(ts, sd)]
        measured += sum(g is not None for g in gain)
        label = {"dhd-hp": "L_HP (dhd-hp)", "dhd-hp-bceq": "L_HP + L_bce-Q (dhd-hp-bceq; +SdH = dhd)"}.get(m, m)
        cells = _cells(tt + ts + sd, None) + ["-" if g is None else f"{g:+.4f}" for g in gain]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        versus_tt += [(m, b, t, c) for b, t, c in zip(TABLE3_BITS, tt, sd) if t is not None and c is not None]
        for b, a, c, t in zip(TABLE3_BITS, ts, sd, tt):
            if a is not None and c is not None and c <= a:
                claims.append(f"SdH does **not** lift {m} at {b} bits: {a:.4f} without, {c:.4f} with.")
            if a is not None and t is not None and a > t:
                claims.append(f"{m} at {b} bits trains better on T_S alone ({a:.4f}) than on T_T ({t:.4f}).")
    if measured and not any("does **not** lift" in c for c in claims):
        claims.insert(0, "SdH lifts every method at every bit length measured (gain = +SdH minus -SdH).")
    if versus_tt:
        behind = [f"{m} {b} bits ({c:.4f} vs {t:.4f})" for m, b, t, c in versus_tt if c <= t]
        claims.append(f"Against training on T_T alone (Table 2's setting), +SdH is ahead in "
                      f"{len(versus_tt) - len(behind)} of {len(versus_tt)} cases"
                      + (f"; behind or level in: {', '.join(behind)}." if behind else "."))  # fmt: skip
    return "\n".join(lines) + "\n", claims


def markdown(rows: list[dict[str, Any]], features: str, metric: str) -> str:
    """Both tables with their claim checks, for the results Markdown."""
    if not any(r["features"] == features and r["method"] in BASELINES for r in rows):
        return ""  # no comparison was run on these features
    t2, c2 = table2(rows, features, metric)
    t3, c3 = table3(rows, features, metric)
    intro = (
        "Every deep row trains the same hash head over the same frozen backbone features, for the same budget "
        "and seed (the rows' config, overrides and commit are in the JSON); shallow rows fit on the same features."
    )
    views = (
        "T_T: trained on the teacher group (as Table 2). -SdH: on the student group T_S only. +SdH: the "
        "method's loss on T_T plus lambda1 L_SdH pulling T_S to it."
    )
    out = [f"## The paper's comparison on `{features}` features ({metric})", "", intro, "",
           "### Table 2 analogue", "", t2, *[f"- {c}" for c in c2], "",
           "### Table 3 analogue", "", views, "", t3, *[f"- {c}" for c in c3], ""]  # fmt: skip
    return "\n".join(out)
