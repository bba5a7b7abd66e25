"""Score trained runs: on their own query / database splits (from their saved codes), or on another
protocol's (encoding its images with the run's model)."""

from __future__ import annotations

import os
from typing import Any

from .codes import pack
from .data.splits import load_training_data
from .run import Run


def evaluate_run(run: str | os.PathLike | Run, protocol: str | None = None) -> dict[str, Any]:
    """The headline metrics of a trained run (``metrics.score``), on its own splits or on ``protocol``'s."""
    run = run if isinstance(run, Run) else Run.load(run)
    cfg = run.config
    if protocol is None or protocol == cfg.data.protocol:
        data = run.data
        q, db = run.codes("query"), run.codes("database")
    else:
        data = load_training_data(
            cfg.data.model_copy(update={"protocol": protocol, "limit_query": None, "limit_database": None, "topk": None})
        )
        q, db = (pack(run.encode(s.images)) for s in (data.query, data.database))
    return {"run": run.name, "protocol": protocol or cfg.data.protocol, "bits": run.bits, **data.score(q, db)}
