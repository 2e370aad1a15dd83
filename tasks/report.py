"""The comparison table: the same rows in the terminal (rich), in Prefect (markdown) and in JSON."""

from __future__ import annotations

import numpy as np

from feature_store.drift import DriftReport
from tasks.evaluate import score
from tasks.handoff import (
    Candidate,
    ComparisonRow,
    FrameDay,
    RawDay,
    RetrievalRow,
    RetrievalSummary,
    StagingOutcome,
)


def comparison_rows(
    candidates: list[Candidate], outcome: StagingOutcome, y: np.ndarray, oracle: np.ndarray | None
) -> list[ComparisonRow]:
    rows = []
    for cand in candidates:
        gate = outcome.gates[cand.arch]
        if cand.arch == outcome.selected and outcome.version_gate is not None:
            gate = outcome.version_gate
        served = gate.dry_run
        rows.append(ComparisonRow(
            model=cand.arch,
            val_auc=cand.result.best_val_auc,
            val_logloss=cand.result.best_val_logloss,
            staging_auc=gate.challenger.auc,
            staging_logloss=gate.challenger.logloss,
            calibration=gate.challenger.calibration,
            delta_auc=gate.delta_auc,
            delta_auc_ci=(gate.delta_auc_low, gate.delta_auc_high) if gate.delta_auc is not None else None,
            delta_logloss=gate.delta_logloss,
            train_samples_per_s=cand.result.train_samples_per_s,
            verdict=gate.verdict,
            registered=f"v{outcome.version}" if cand.arch == outcome.selected else "",
            served_p50_ms=served.p50_ms if served is not None else None,
            served_p99_ms=served.p99_ms if served is not None else None,
        ))
    if outcome.champion is not None and outcome.champion.pred is None:
        rows.append(ComparisonRow(f"champion v{outcome.champion.version}", verdict="broken (health=broken)"))
    elif outcome.champion is not None:
        champ = score(y, outcome.champion.pred)
        rows.append(ComparisonRow(f"champion v{outcome.champion.version}", staging_auc=champ.auc,
                                  staging_logloss=champ.logloss, calibration=champ.calibration,
                                  verdict="in production"))
    if oracle is not None:
        best = score(y, oracle)
        rows.append(ComparisonRow("oracle (true CTR)", staging_auc=best.auc, staging_logloss=best.logloss,
                                  calibration=best.calibration, verdict="ceiling"))
    return rows


def oracle_column(day: RawDay | FrameDay, spec) -> np.ndarray | None:
    """The spec's true click probability on a day (synthetic data only), or None."""
    if not spec.oracle_column or not day.has_column(spec.oracle_column):
        return None
    return day.column(spec.oracle_column)


def oracle_scores(day: RawDay | FrameDay, spec) -> dict | None:
    """AUC/logloss of the true click probability: the ceiling any model can reach."""
    oracle = oracle_column(day, spec)
    if oracle is None:
        return None
    best = score(day.column(spec.label), oracle)
    return {"auc": best.auc, "logloss": best.logloss}


def _fmt(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


def _cells(row: ComparisonRow) -> list[str]:
    ci = row.delta_auc_ci
    delta = "" if row.delta_auc is None else f"{row.delta_auc:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]"
    return [
        row.model,
        _fmt(row.val_auc, ".4f"),
        _fmt(row.staging_auc, ".4f"),
        _fmt(row.staging_logloss, ".4f"),
        delta,
        _fmt(row.delta_logloss, "+.4f"),
        _fmt(row.calibration, ".3f"),
        row.verdict,
        row.registered,
        "" if row.served_p99_ms is None else f"{row.served_p50_ms:.1f} / {row.served_p99_ms:.1f}",
    ]


HEADERS = ["model", "val AUC", "staging AUC", "staging logloss", "Δ AUC vs champion [95% CI]",
           "Δ logloss", "calibration", "gate", "registered", "served p50 / p99 ms"]


def markdown_table(rows: list[ComparisonRow]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def rich_table(rows: list[ComparisonRow], title: str):
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for h in HEADERS:
        table.add_column(h, overflow="fold")
    for r in rows:
        table.add_row(*_cells(r))
    return table


def drift_headline(drift: DriftReport | None) -> str:
    """One line: what was compared and how many flags (the measures: MLflow, `plots/drift.png`)."""
    if drift is None:
        return "Drift: not checked (RECLOOP_DRIFT_MODE=off)"
    # Fitted days: the window less its validation day, what the vocabularies and weights saw.
    n = len(drift.features)
    what = (f"fitted days {drift.train_rows:,} rows vs staging day {drift.staging_rows:,} rows, "
            f"{n} feature{'' if n == 1 else 's'}, mode {drift.mode}")
    if not drift.flags:
        return f"Drift ({what}): none flagged"
    effect = ": promotion blocked" if drift.blocks else ""
    return f"Drift ({what}): {len(drift.flags)} flagged{effect}"


def drift_lines(drift: DriftReport | None) -> list[str]:
    """The drift section as plain lines (the terminal): the headline, then one flag a line."""
    return [drift_headline(drift), *(f"  - {f.reason}" for f in (drift.flags if drift else []))]


def drift_markdown(drift: DriftReport | None) -> str:
    """The drift section of the comparison and approval artifacts: flagged features as a list
    (narrow: it also shows in the approval run's resume form)."""
    head = "**Drift**" + drift_headline(drift)[len("Drift"):]
    flags = [f"- {f.reason}" for f in (drift.flags if drift else [])]
    return "\n".join([head, "", *flags] if flags else [head])


# ---------------------------------------------------------------- the retrieval stage


def _retrieval_cells(row: RetrievalRow) -> list[str]:
    ci = row.delta_recall_ci
    delta = "" if row.delta_recall is None else f"{row.delta_recall:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]"
    return [row.model, _fmt(row.val_recall, ".4f"), _fmt(row.recall_10, ".4f"), _fmt(row.ndcg_10, ".4f"),
            _fmt(row.recall_k, ".4f"), _fmt(row.coverage_k, ".3f"), delta, _fmt(row.fit_seconds, ".1f"),
            row.verdict, row.registered]


def retrieval_headers(k: int) -> list[str]:
    return ["retriever", f"val Recall@{k}", "Recall@10", "NDCG@10", f"Recall@{k}", f"coverage@{k}",
            f"Δ Recall@{k} vs champion [95% CI]", "fit s", "gate", "registered"]


def pipeline_line(summary: RetrievalSummary) -> str:
    """One line: the two-stage pipeline's top-N next to the retriever's own order."""
    p, n = summary.pipeline, summary.top_n
    if not p:
        return "Pipeline: not evaluated (no ranker or no staging user with a positive)"
    return (f"Pipeline {summary.pipeline_models}: Recall@{n} {p[f'pipeline_recall_at_{n}']:.4f}, "
            f"NDCG@{n} {p[f'pipeline_ndcg_at_{n}']:.4f}, MRR@{n} {p[f'pipeline_mrr_at_{n}']:.4f} "
            f"(retriever order: Recall@{n} {p[f'pipeline_retriever_recall_at_{n}']:.4f}, "
            f"NDCG@{n} {p[f'pipeline_retriever_ndcg_at_{n}']:.4f}) over {int(p['pipeline_users'])} users")


def retrieval_markdown(summary: RetrievalSummary | None) -> str:
    """The retrieval section of the comparison artifact ('' when the stage did not run)."""
    if summary is None:
        return ""
    headers = retrieval_headers(summary.k)
    lines = [f"\n\n### Retrieval (top-{summary.k}, {summary.users:,} staging users with a positive)\n",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _retrieval_cells(r)) + " |" for r in summary.rows]
    lines += ["", f"**Retriever champion:** v{summary.champion_before or '-'} -> v{summary.champion_after or '-'}",
              "", pipeline_line(summary)]
    lines += [f"- {n}" for n in summary.notes]
    return "\n".join(lines)


def retrieval_rich_table(summary: RetrievalSummary, title: str):
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for h in retrieval_headers(summary.k):
        table.add_column(h, overflow="fold")
    for r in summary.rows:
        table.add_row(*_retrieval_cells(r))
    return table
