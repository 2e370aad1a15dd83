"""The retrieval stage of a night: candidate generation, gated and registered like the ranker,
then the two-stage pipeline (retriever top-K -> ranker re-scores -> top-N) evaluated.

    aggregate   the window's raw files, a chunk at a time: positives of the fitted days, every
                pair seen, the catalogue, the validation and staging days' users and clicks
    fit         each retriever the spec lists (`models.retrieval.trainer.fit_retriever`), one
                MLflow child run each (`retriever:<name>`, tag `stage=retrieval`), the same
                metric keys on every run: `val_*` and `staging_*` recall/ndcg/hit/mrr/coverage
                at K in {10, 50, 100}
    gate        Recall@K vs the champion retriever (its own bundle, on the same staging users)
                with a tolerance and a paired bootstrap interval; no champion: a floor
    register    the passing retriever with the best validation Recall@K: `<dataset>-retriever`,
                version with its gate tags in one write, `challenger`, then (auto) `champion`
    pipeline    the champion retriever's top-K per staging user, re-scored by the ranker's
                bundle on raw rows built from the user's and each item's features, the top-N
                evaluated: `pipeline_*` metrics on the night's parent run

Selection uses the validation day (retrievers fit on the fitted days, as the rankers do), so the
staging numbers stay an unbiased check.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from feature_store.errors import ParameterError
from feature_store.id_maps import vocabularies
from feature_store.interactions import EvalDay, IdSpace, Pairs, aggregate_day, aggregate_window
from feature_store.spec import DatasetSpec
from models.metrics import TOPK_KS, per_user_recall, topk_metrics
from models.retrieval import retriever_class
from models.retrieval.base import Interactions, SideInfo
from models.retrieval.trainer import RetrievalTrainConfig, fit_retriever
from tasks import registry
from tasks.evaluate import Check
from tasks.handoff import (
    Night,
    PreparedData,
    RawWindow,
    RetrievalData,
    RetrievalRow,
    RetrievalSummary,
    RetrieverCandidate,
)
from tasks.preprocess import parquet_parts
from tasks.retrieval_gate import (
    RetrievalGate,
    RetrievalPolicy,
    evaluate_retrieval_gate,
)
from tasks.retriever_bundle import log_retriever_bundle, recommend_frame, top_k

STAGE_TAG = "stage"  # `retrieval` on retriever runs: the ranking compare view filters them out
STAGE = "retrieval"


def check_retrievers(spec: DatasetSpec) -> None:
    """Fail before any work on an unknown retriever or hyper-parameter (the error names the
    spec key and lists what exists)."""
    if spec.retrieval is None:
        return
    for n, entry in enumerate(spec.retrieval.retrievers):
        try:
            cls = retriever_class(entry.name)
            from models._config import config_from_dict

            config_from_dict(cls.config_class, entry.hparams, what=f"retriever {entry.name!r}")
        except ValueError as exc:
            raise ParameterError(f"dataset spec {spec.name}: retrieval.retrievers.{n}: {exc}") from None


def enabled(spec: DatasetSpec, policy: RetrievalPolicy) -> bool:
    return spec.retrieval is not None and policy.enabled


def top_k_of(spec: DatasetSpec, policy: RetrievalPolicy) -> int:
    """K: the spec's `retrieval.k`, else the setting."""
    return spec.retrieval.k if spec.retrieval and spec.retrieval.k else policy.k


def evaluation_ks(k: int) -> tuple[int, ...]:
    """The cut-offs every run logs: 10, 50, 100 up to K (and K itself)."""
    return tuple(sorted({*(x for x in TOPK_KS if x <= k), k}))


def mlflow_metrics(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """`recall@10` -> `<prefix>_recall_at_10` (MLflow keys may not hold '@')."""
    return {f"{prefix}_{key.replace('@', '_at_')}": value for key, value in metrics.items()}


# ---------------------------------------------------------------- data


def _interactions(pairs: Pairs, ids: IdSpace) -> Interactions:
    return Interactions.from_pairs(pairs.users, pairs.items, ids.n_users, ids.n_items, pairs.counts)


def side_info(spec: DatasetSpec, catalogue: pd.DataFrame, user_table: pd.DataFrame, ids: IdSpace,
              vocabs: dict[str, pd.Index]) -> SideInfo:
    """Item terms (TF-IDF of the text and tag columns, `feature_store/text.py`) and the user's
    and item's categorical ids through the fitted vocabularies (for feature-based retrievers)."""
    section = spec.retrieval
    terms = None
    if section.text_columns or section.tag_columns:
        from feature_store.text import item_term_matrix

        texts = [""] * ids.n_items
        for column in section.text_columns:
            if column in catalogue.columns:
                texts = [f"{t} {v}" if isinstance(v, str) else t for t, v in zip(texts, catalogue[column])]
        tags = [[] for _ in range(ids.n_items)]
        for tag in section.tag_columns:
            values = catalogue[tag.name] if tag.name in catalogue.columns else pd.Series([None] * ids.n_items)
            for i, v in enumerate(values):
                if isinstance(v, str) and v:
                    tags[i].extend(v.split(tag.separator) if tag.separator else [v])
                elif v is not None and not pd.isna(v):
                    tags[i].append(str(v))
        m = item_term_matrix(texts, tags)
        terms = Interactions(m.indptr, m.indices, m.data, ids.n_items, len(m.vocabulary))

    def ids_of(table: pd.DataFrame, columns: list[str]) -> tuple[np.ndarray | None, tuple[int, ...]]:
        cols = [c for c in columns if c in vocabs and c in table.columns]
        if not cols:
            return None, ()
        out = np.stack([IdSpace(c, c, vocabs[c], vocabs[c]).user_index(table[c].to_numpy()) for c in cols], 1)
        return out.astype(np.int64), tuple(len(vocabs[c]) + 3 for c in cols)

    users, user_cards = ids_of(user_table, spec.user_columns)
    items, item_cards = ids_of(catalogue, spec.item_columns)
    return SideInfo(item_terms=terms, user_features=users, item_features=items,
                    user_cardinalities=user_cards, item_cardinalities=item_cards)


def prepare_retrieval(window: RawWindow, spec: DatasetSpec, data: PreparedData, work, chunk_rows: int
                      ) -> RetrievalData:
    """Aggregate the night's raw files (the same parquet parts preprocessing read) over the
    fitted vocabularies: nothing is held whole but the distinct pairs and the tables."""
    t0 = time.perf_counter()
    vocabs = vocabularies(data.preprocessor)
    ids = IdSpace.from_vocabularies(spec, vocabs)
    files = {name: parquet_parts(window, days, work / "raw") for name, days in
             (("fit", window.fit_days), ("val", [window.val_day]), ("staging", [window.holdout_day]))}
    fit = aggregate_window(files["fit"], spec, ids, chunk_rows)
    val_window = aggregate_window(files["val"], spec, ids, chunk_rows, catalogue=False)
    row_columns = list(dict.fromkeys([*spec.feature_columns, spec.label]))
    val = aggregate_day(files["val"], spec, ids, chunk_rows)
    staging = aggregate_day(files["staging"], spec, ids, chunk_rows, row_columns)
    return RetrievalData(
        ids=ids,
        train=_interactions(fit.positives, ids),
        seen_val=_interactions(fit.seen, ids),
        seen_staging=_interactions(Pairs.union(fit.seen, val_window.seen), ids),
        catalogue=fit.catalogue,
        user_table=fit.user_table,
        val=val,
        staging=staging,
        side=side_info(spec, fit.catalogue, fit.user_table, ids, vocabs),
        seconds=time.perf_counter() - t0,
    )


# ---------------------------------------------------------------- fit and evaluate


def evaluate_day(model, day: EvalDay, exclude: Interactions | None, n_items: int, k: int
                 ) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Top-K for every user active that day and the top-K metrics against their clicks."""
    items, scores = top_k(model, day.users, k, exclude)
    return topk_metrics(items, day.relevant, n_items, evaluation_ks(k)), items, scores


def fit_candidates(client: MlflowClient, night: Night, spec: DatasetSpec, data: RetrievalData,
                   policy: RetrievalPolicy, k: int, log: Callable[[str], None] = print) -> list[RetrieverCandidate]:
    """Fit every retriever the spec lists, each in its own child run of the night."""
    config = RetrievalTrainConfig(epochs=policy.epochs, batch_size=policy.batch_size, lr=policy.lr, seed=policy.seed)
    out = []
    for entry in spec.retrieval.retrievers:
        with mlflow.start_run(experiment_id=night.experiment_id, run_name=f"retriever:{entry.name}",
                              parent_run_id=night.parent_run_id,
                              tags={**night.tags, STAGE_TAG: STAGE, "retriever": entry.name}) as run:
            fit = fit_retriever(entry.name, data.train, data.side, entry.hparams, config)
            model = fit.model
            mlflow.log_params({
                "retriever": entry.name, "retrieval.k": k, "retrieval.exclude_seen": policy.exclude_seen,
                "retrieval.epochs": policy.epochs, "train_pairs": data.train.nnz, "n_users": data.ids.n_users,
                "n_items": data.ids.n_items,
                **{f"hp.{key}": str(v) for key, v in dataclasses.asdict(model.config).items()},
            })
            for epoch, loss in enumerate(fit.losses, 1):
                mlflow.log_metric("train_loss", loss, step=epoch)
            t0 = time.perf_counter()
            val, _, _ = evaluate_day(model, data.val, data.seen_val if policy.exclude_seen else None,
                                     data.ids.n_items, k)
            staging, items, scores = evaluate_day(model, data.staging,
                                                  data.seen_staging if policy.exclude_seen else None,
                                                  data.ids.n_items, k)
            seconds = time.perf_counter() - t0
            metrics = {**mlflow_metrics(val, "val"), **mlflow_metrics(staging, "staging"),
                       "fit_seconds": fit.seconds, "recommend_seconds": seconds, "epochs": float(fit.epochs)}
            mlflow.log_metrics({key: v for key, v in metrics.items() if np.isfinite(v)})
            log(f"[retriever {entry.name}] fit {fit.seconds:.1f} s; val Recall@{k} {val[f'recall@{k}']:.4f}, "
                f"staging Recall@10 {staging['recall@10']:.4f} NDCG@10 {staging['ndcg@10']:.4f} "
                f"Recall@{k} {staging[f'recall@{k}']:.4f}")
        out.append(RetrieverCandidate(entry.name, run.info.run_id, fit, metrics, items, scores,
                                      per_user_recall(items, data.staging.relevant, k), dict(entry.hparams)))
    return out


def eval_indices(raw_items: np.ndarray, ids: IdSpace, day: EvalDay) -> np.ndarray:
    """Raw item ids -> the evaluated day's item indices (catalogue, then `day.outside`; -1 else)."""
    idx = ids.item_index(raw_items)
    if len(day.outside) and (idx < 0).any():
        extra = pd.Index(day.outside).get_indexer(np.asarray(raw_items)[idx < 0])
        idx[idx < 0] = np.where(extra >= 0, ids.n_items + extra, -1)
    return idx


def frame_to_lists(frame: pd.DataFrame, ids: IdSpace, day: EvalDay, k: int, exclude: Interactions | None
                   ) -> np.ndarray:
    """A bundle's long output -> (U, k) evaluation indices in `day.raw_users` order, dropping
    tonight's seen pairs (the champion only knew its own window's)."""
    out = np.full((len(day.raw_users), k), -1, dtype=np.int64)
    row_of = pd.Index(day.raw_users).get_indexer(frame[ids.user_column].to_numpy())
    items = eval_indices(frame[ids.item_column].to_numpy(), ids, day)
    for u, group in pd.Series(np.arange(len(frame))).groupby(row_of):
        if u < 0:
            continue
        got = items[group.to_numpy()]
        got = got[got >= 0]
        if exclude is not None:
            got = got[~np.isin(got, exclude.row(int(day.users[u])))]
        got = got[:k]
        out[u, :got.size] = got
    return out


def champion_lists(client: MlflowClient, name: str, data: RetrievalData, k: int, policy: RetrievalPolicy
                   ) -> tuple[str | None, np.ndarray | None, str | None]:
    """The champion retriever's top-K for tonight's staging users, through its own bundle:
    (version, (U, k) indices, why it is broken). It is asked for 2K and tonight's seen pairs
    are dropped. No champion: (None, None, None)."""
    mv = registry.alias_version(client, name, registry.CHAMPION)
    if mv is None:
        return None, None, None
    try:
        bundle = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}")
        frame = bundle.predict(pd.DataFrame({data.ids.user_column: data.staging.raw_users}), params={"k": 2 * k})
        lists = frame_to_lists(frame, data.ids, data.staging, k, data.seen_staging if policy.exclude_seen else None)
    except Exception as exc:  # whatever broke, the night goes on against the floor
        reason = f"cannot recommend for the staging day: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        registry.mark_health(client, name, str(mv.version), reason)
        return str(mv.version), None, reason
    registry.mark_health(client, name, str(mv.version), None)
    return str(mv.version), lists, None


def gate_retrievers(client: MlflowClient, candidates: list[RetrieverCandidate], champion: np.ndarray | None,
                    data: RetrievalData, k: int, policy: RetrievalPolicy, champion_version: str | None,
                    extra_checks: Sequence[Check] = ()) -> dict[str, RetrievalGate]:
    """Gate every retriever; `extra_checks` join every gate (a blocking drift report's `drift`)."""
    old = per_user_recall(champion, data.staging.relevant, k) if champion is not None else None
    gates = {}
    for cand in candidates:
        finite = bool(np.all(np.isfinite(cand.staging_scores[cand.staging_items >= 0])))
        gate = evaluate_retrieval_gate(cand.staging_recall, old, k, policy, finite)
        for check in extra_checks:
            gate.add_check(check)
        gates[cand.name] = gate
        for key, value in gate.metrics().items():
            client.log_metric(cand.run_id, key, float(value))
        client.set_tag(cand.run_id, "gate.verdict", gate.verdict)
        if champion_version:
            client.set_tag(cand.run_id, "champion_version", champion_version)
    return gates


def register_retriever(client: MlflowClient, night: Night, spec: DatasetSpec, cand: RetrieverCandidate,
                       gate: RetrievalGate, data: RetrievalData, k: int, policy: RetrievalPolicy) -> str:
    """Log the bundle in the candidate's run, check that it loads back and reproduces the
    in-memory top-K, then the registry writes in the ranker's order: the version with its gate
    tags in one write, then `challenger` if every check passed."""
    name = registry.retriever_model_name(night.dataset)
    seen = data.seen_staging
    users = data.staging.raw_users[: max(1, min(50, len(data.staging.raw_users)))]
    with mlflow.start_run(run_id=cand.run_id):
        uri = log_retriever_bundle(cand.fit.model, data.ids, seen, spec, k, policy.exclude_seen, users)
    try:
        loaded = mlflow.pyfunc.load_model(uri).predict(pd.DataFrame({data.ids.user_column: users}), params={"k": k})
        expected = recommend_frame(cand.fit.model, data.ids, pd.DataFrame({data.ids.user_column: users}), k,
                                   seen if policy.exclude_seen else None)
        same = (len(loaded) == len(expected)
                and (loaded[data.ids.item_column].astype(str).to_numpy() == expected[data.ids.item_column].astype(str)
                     .to_numpy()).all())
        gate.add_check(Check("bundle_reload", bool(same), f"reloaded bundle {'reproduces' if same else 'differs from'} "
                                                          f"the top-{k} of {len(users)} users"))
    except Exception as exc:
        gate.add_check(Check("bundle_reload", False, f"bundle failed to reload from the store: {exc}"))
    health = {registry.HEALTH: registry.OK if gate.passed else registry.BROKEN, registry.HEALTH_AT: registry.utc_stamp()}
    mv = registry.register_version(client, name, night.dataset, uri, cand.run_id,
                                   {**night.version_tags, "retriever": cand.name, **gate.tags(), **health})
    version = str(mv.version)
    client.set_tag(cand.run_id, "registered_version", version)
    if gate.passed:
        client.set_registered_model_alias(name, registry.CHALLENGER, version)
    return version


# ---------------------------------------------------------------- the two-stage pipeline


def candidate_rows(users: pd.DataFrame, items: np.ndarray, data: RetrievalData, item_columns: list[str]
                   ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Raw ranker rows for each (user, candidate item): the user's row of the day with the item
    columns replaced by the catalogue's. Returns (rows, user position, rank position) of the
    valid candidates (-1 pads skipped)."""
    n, k = items.shape
    flat = items.ravel()
    valid = (flat >= 0) & (flat < data.ids.n_items)
    u_pos = np.repeat(np.arange(n), k)[valid]
    r_pos = np.tile(np.arange(k), n)[valid]
    rows = users.iloc[u_pos].reset_index(drop=True)
    catalogue = data.catalogue.iloc[flat[valid]].reset_index(drop=True)
    for column in item_columns:
        if column in catalogue.columns:
            rows[column] = catalogue[column].to_numpy()
    return rows, u_pos, r_pos


def rerank(items: np.ndarray, users: pd.DataFrame, data: RetrievalData, item_columns: list[str],
           score: Callable[[pd.DataFrame], np.ndarray], top_n: int, chunk_users: int = 256) -> np.ndarray:
    """The ranker's order of each user's retrieved items: (U, top_n) item indices, best ranker
    score first (ties keep the retriever's order), -1 padded."""
    out = np.full((len(items), top_n), -1, dtype=np.int64)
    for start in range(0, len(items), chunk_users):
        block = items[start:start + chunk_users]
        rows, u_pos, r_pos = candidate_rows(users.iloc[start:start + chunk_users], block, data, item_columns)
        if not len(rows):
            continue
        s = np.full(block.shape, -np.inf)
        s[u_pos, r_pos] = np.asarray(score(rows), dtype=np.float64).ravel()
        order = np.argsort(-s, axis=1, kind="stable")[:, :top_n]
        ranked = np.take_along_axis(block, order, 1)
        ranked[~np.isfinite(np.take_along_axis(s, order, 1))] = -1
        out[start:start + len(block), :ranked.shape[1]] = ranked
    return out


def run_pipeline(items: np.ndarray, ranker_uri: str, data: RetrievalData, spec: DatasetSpec, top_n: int
                 ) -> dict[str, float]:
    """Retrieved top-K -> the ranker's bundle re-scores them -> the top-N evaluated, next to
    the retriever's own top-N (what the re-ranking changed)."""
    from tasks.stage import input_columns

    t0 = time.perf_counter()
    bundle = mlflow.pyfunc.load_model(ranker_uri)
    columns = input_columns(bundle) or spec.feature_columns
    keep = np.flatnonzero([len(r) > 0 for r in data.staging.relevant])  # the users the metrics average
    users = data.staging.user_rows.iloc[keep].reset_index(drop=True)
    relevant = [data.staging.relevant[i] for i in keep]
    final = rerank(items[keep], users, data, spec.item_columns,
                   lambda rows: bundle.predict(rows[columns]), top_n)
    ks = (top_n,)
    out = {**mlflow_metrics(topk_metrics(final, relevant, data.ids.n_items, ks), "pipeline"),
           **mlflow_metrics(topk_metrics(items[keep][:, :top_n], relevant, data.ids.n_items, ks), "pipeline_retriever")}
    out |= {"pipeline_users": float(len(keep)), "pipeline_seconds": time.perf_counter() - t0}
    return out


# ---------------------------------------------------------------- the stage


def _rows(candidates, gates, k, selected, version, champion_version, champion_metrics) -> list[RetrievalRow]:
    rows = []
    for c in candidates:
        g = gates[c.name]
        rows.append(RetrievalRow(
            c.name, val_recall=c.metrics.get(f"val_recall_at_{k}"), recall_10=c.metrics.get("staging_recall_at_10"),
            ndcg_10=c.metrics.get("staging_ndcg_at_10"), recall_k=c.metrics.get(f"staging_recall_at_{k}"),
            coverage_k=c.metrics.get(f"staging_coverage_at_{k}"), delta_recall=g.delta,
            delta_recall_ci=(g.delta_low, g.delta_high) if g.delta is not None else None,
            fit_seconds=c.fit.seconds, verdict=g.verdict, registered=f"v{version}" if c.name == selected else ""))
    if champion_metrics is not None:
        m = champion_metrics
        rows.append(RetrievalRow(f"champion v{champion_version}", recall_10=m["staging_recall_at_10"],
                                 ndcg_10=m["staging_ndcg_at_10"], recall_k=m[f"staging_recall_at_{k}"],
                                 coverage_k=m[f"staging_coverage_at_{k}"], verdict="in production"))
    elif champion_version:
        rows.append(RetrievalRow(f"champion v{champion_version}", verdict="broken (health=broken)"))
    return rows


def run_retrieval(client: MlflowClient, night: Night, spec: DatasetSpec, window: RawWindow, data: PreparedData,
                  work, policy: RetrievalPolicy, approval_mode: str, ranker_uri: str | None, ranker_label: str = "",
                  chunk_rows: int = 262_144, evaluate_only: bool = False, log: Callable[[str], None] = print,
                  extra_checks: Sequence[Check] = ()) -> RetrievalSummary:
    """The whole stage (see the module docstring); returns the table and what moved.
    `extra_checks` fail every retriever's gate too (a blocking drift report: the staging day's
    data is in question for both stages)."""
    t0 = time.perf_counter()
    k = top_k_of(spec, policy)
    name = registry.retriever_model_name(night.dataset)
    rdata = prepare_retrieval(window, spec, data, work, chunk_rows)
    log(f"retrieval: {rdata.train.nnz:,} positive pairs of {rdata.ids.n_users - 3:,} users x {rdata.ids.n_items:,} "
        f"items aggregated in {rdata.seconds:.1f} s; staging day: {len(rdata.staging.raw_users):,} users, "
        f"{rdata.staging.n_evaluated:,} with a positive ({len(rdata.staging.outside)} clicked items outside the catalogue)")
    candidates = fit_candidates(client, night, spec, rdata, policy, k, log)
    champion_version, champ, broken = champion_lists(client, name, rdata, k, policy)
    summary = RetrievalSummary(k=k, top_n=policy.top_n, users=rdata.staging.n_evaluated,
                               champion_before=champion_version)
    if broken:
        summary.notes.append(f"retriever champion v{champion_version} marked health=broken: {broken}")
    if champ is not None:
        summary.champion_metrics = mlflow_metrics(
            topk_metrics(champ, rdata.staging.relevant, rdata.ids.n_items, evaluation_ks(k)), "staging")
    gates = gate_retrievers(client, candidates, champ, rdata, k, policy, champion_version, extra_checks)
    passing = [c for c in candidates if gates[c.name].passed]
    chosen = max(passing, key=lambda c: c.metrics.get(f"val_recall_at_{k}", -1.0)) if passing else None
    version = None
    if evaluate_only:
        summary.notes.append("retrieval: backfill, evaluated only")
    elif chosen is None:
        summary.notes.append("retrieval: no retriever passed the gate; retriever champion unchanged")
    else:
        version = register_retriever(client, night, spec, chosen, gates[chosen.name], rdata, k, policy)
        summary.selected, summary.registered_version = chosen.name, version
        summary.registered_run_id, summary.gate = chosen.run_id, gates[chosen.name]
        summary.challenger_metrics = {key: v for key, v in chosen.metrics.items() if key.startswith("staging_")}
        if gates[chosen.name].passed and approval_mode == "auto":
            registry.promote(client, name, version, approved_by="auto-gate",
                             reason=f"retrieval gate passed: {gates[chosen.name].explanation}")
            summary.promoted = True
        elif gates[chosen.name].passed:
            summary.notes.append(f"retriever v{version} is the challenger, waiting for approval")
        else:
            summary.notes.append(f"retriever v{version} ({chosen.name}) failed after registration: "
                                 f"{gates[chosen.name].explanation}")
    after = registry.alias_version(client, name, registry.CHAMPION)
    summary.champion_after = str(after.version) if after else None
    summary.rows = _rows(candidates, gates, k, summary.selected, version, champion_version, summary.champion_metrics)

    # The pipeline: the champion retriever (tonight's if it was promoted), else the best of tonight.
    if summary.promoted:
        items, which = chosen.staging_items, f"retriever v{version} ({chosen.name}, promoted tonight)"
    elif champ is not None and summary.champion_after == champion_version:
        items, which = champ, f"retriever champion v{champion_version}"
    elif candidates:
        best = chosen or max(candidates, key=lambda c: c.metrics.get(f"val_recall_at_{k}", -1.0))
        items, which = best.staging_items, f"retriever {best.name} (tonight's best, not the champion)"
    if ranker_uri is not None and candidates and rdata.staging.n_evaluated:
        summary.pipeline = run_pipeline(items, ranker_uri, rdata, spec, policy.top_n)
        summary.pipeline_models = f"{which} -> ranker {ranker_label or ranker_uri}"
        for key, value in summary.pipeline.items():
            if np.isfinite(value):
                client.log_metric(night.parent_run_id, key, value)
        client.set_tag(night.parent_run_id, "pipeline.models", summary.pipeline_models)
        p = summary.pipeline
        log(f"pipeline ({summary.pipeline_models}): Recall@{policy.top_n} {p[f'pipeline_recall_at_{policy.top_n}']:.4f} "
            f"NDCG@{policy.top_n} {p[f'pipeline_ndcg_at_{policy.top_n}']:.4f} (retriever order: Recall@{policy.top_n} "
            f"{p[f'pipeline_retriever_recall_at_{policy.top_n}']:.4f}) over {int(p['pipeline_users'])} users")
    summary.seconds = time.perf_counter() - t0
    return summary


def pipeline_ranker(client: MlflowClient, night: Night, candidates: list, selected: str | None
                    ) -> tuple[str | None, str]:
    """The ranker the pipeline re-scores with: the ranking champion (after tonight's promotion),
    else tonight's selected candidate, else tonight's best by validation AUC. (URI, label)."""
    champion = registry.alias_version(client, night.model_name, registry.CHAMPION)
    if champion is not None:
        return f"models:/{night.model_name}/{champion.version}", f"champion v{champion.version}"
    pick = next((c for c in candidates if c.arch == selected), None) or (
        max(candidates, key=lambda c: c.result.best_val_auc) if candidates else None)
    return (pick.model_uri, f"{pick.arch} (tonight's, not registered)") if pick else (None, "")


@task(name="retrieval", cache_policy=NO_CACHE)
def retrieval_task(client: MlflowClient, night: Night, spec: DatasetSpec, window: RawWindow, data: PreparedData,
                   work, policy: RetrievalPolicy, approval_mode: str, ranker_uri: str | None, ranker_label: str = "",
                   chunk_rows: int = 262_144, evaluate_only: bool = False,
                   extra_checks: Sequence[Check] = ()) -> RetrievalSummary:
    """Fit, gate and register the spec's retrievers; evaluate retriever -> ranker on the staging day."""
    return run_retrieval(client, night, spec, window, data, work, policy, approval_mode, ranker_uri, ranker_label,
                         chunk_rows, evaluate_only, log=get_run_logger().info, extra_checks=extra_checks)
