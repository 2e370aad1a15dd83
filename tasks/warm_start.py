"""Warm start: a challenger of the champion's architecture starts from the champion's weights,
remapped through both vocabularies (a refit Categorify renumbers the ids).

Once per night, `load_source` loads the champion's registered bundle (its model and its fitted
preprocessing) and matches its vocabularies to tonight's (`feature_store.id_maps`). Per
architecture, `start_from` copies what fits into the freshly built model (`models.warm_start`)
or leaves it cold and says why; `log_warm_start` records either on the candidate's child run:

    param  warm_start                         auto | off (the setting)
    param  warm_start.from_version            the champion version started from, or none
    tag    warm_start.fallback                why the run started cold, or none
    tag    warm_start.not_copied              tensors that kept their fresh initialisation (warm runs)
    metric warm_start.copied_share.<field>    share of the field's rows that got a champion row
                                              (every id field of the schema, on every run: 0 when cold)
    metric warm_start.initial_val_logloss/auc the model before its first step (also epoch 0 of
                                              epoch_val_logloss / epoch_val_auc)
    metric warm_start.seconds                 the remap and that validation (cold: the validation)

Nothing here fails a night: a champion that cannot be loaded, or one of another architecture,
means a cold start with the reason logged. The optimizer state is never carried over (the
bundle does not hold it): a warm start copies weights only, and Adam starts fresh.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from datetime import date

import mlflow
import torch
from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from feature_store.id_maps import id_maps
from models import build_model
from models.warm_start import shape_conflicts, warm_start
from tasks import guards, registry
from tasks.handoff import Candidate, WarmSource, WarmStart

OFF = "off"
NONE = "none"  # the value of a param or tag that has nothing to say
_TAG_CHARS = 5000  # MLflow's limit on a tag value
_LISTED = 20  # not-copied tensors named in the tag; the rest are counted
OFF_SOURCE = WarmSource(unavailable=f"warm_start={OFF}", mode=OFF)


def load_source(client: MlflowClient, name: str, preprocessor, mode: str, staging_day: date) -> WarmSource:
    """The champion of registered model `name` to warm-start tonight's challengers from, with
    the id maps from its preprocessing to `preprocessor` (tonight's, fitted); or why there is none.

    A champion that trained on `staging_day` (a backfill night) is not used: the challenger
    would carry the very day it is judged on."""
    if mode == OFF:
        return OFF_SOURCE
    mv = registry.alias_version(client, name, registry.CHAMPION)
    if mv is None:
        return WarmSource(unavailable="no champion yet", mode=mode)
    version = str(mv.version)
    if mv.tags.get(registry.HEALTH) == registry.BROKEN:
        reason = mv.tags.get(registry.HEALTH_REASON) or "no reason recorded"
        return WarmSource(version, unavailable=f"champion v{version} is marked {registry.HEALTH}={registry.BROKEN}: "
                                               f"{reason}", mode=mode)
    last = guards.champion_last_training_day(mv)
    if last is not None and last >= staging_day:
        return WarmSource(version, unavailable=f"champion v{version} trained on days up to {last}, "
                                               f"tonight's staging day is {staging_day}", mode=mode)
    try:
        bundle = mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()
        model = bundle.model
        bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"non-finite weights in {bad[:3]}")
        maps = id_maps(bundle.preprocessor, preprocessor)
    except Exception as exc:  # whatever broke, tonight starts cold
        first = (str(exc).splitlines() or [""])[0][:300]
        return WarmSource(version, unavailable=f"champion v{version} cannot be loaded: {type(exc).__name__}: {first}",
                          mode=mode)
    return WarmSource(version, model.arch_name, model, maps, mode=mode)


def build(arch: str, schema, hparams: dict | None, seed: int, source: WarmSource) -> tuple[torch.nn.Module, WarmStart]:
    """Tonight's model: built from the seed, then started from the champion when it fits
    (`start_from`). A remap that raises must not fail the night: the model is then built from
    the seed again (the remap may have copied part of it) and starts cold, with the error."""
    model = build_model(arch, schema, hparams, seed=seed)
    t0 = time.perf_counter()
    try:
        started = start_from(model, arch, hparams, source)
        return model, dataclasses.replace(started, seconds=time.perf_counter() - t0)
    except Exception as exc:
        first = (str(exc).splitlines() or [""])[0][:300]
        return build_model(arch, schema, hparams, seed=seed), WarmStart(
            fallback=f"the warm start from champion v{source.version} failed: {type(exc).__name__}: {first}")


def start_from(model: torch.nn.Module, arch: str, hparams: dict | None, source: WarmSource) -> WarmStart:
    """Initialise `model` (just built for tonight as `arch` with `hparams`) from the champion
    when their architecture and shapes allow it; otherwise leave it as built and say why."""
    if source.model is None:
        return WarmStart(fallback=source.unavailable)
    champion = f"champion v{source.version}"
    if source.arch != arch:
        return WarmStart(fallback=f"{champion} is {source.arch}, not {arch}")
    conflicts = shape_conflicts(arch, hparams, source.model)
    if conflicts:
        more = f" and {len(conflicts) - 3} more" if len(conflicts) > 3 else ""
        return WarmStart(fallback=f"{champion}'s hyper-parameters give other shapes: {'; '.join(conflicts[:3])}{more}")
    report = warm_start(model, source.model, source.id_maps.old_ids, source.id_maps.skipped)
    if not report.copied:  # the model is untouched: a cold start
        return WarmStart(fallback=f"nothing of {champion} fits: {_listed(report.not_copied)}")
    return WarmStart(from_version=source.version, copied_share=report.copied_share, not_copied=report.not_copied)


def log_warm_start(mode: str, ws: WarmStart, fields: list[str]) -> None:
    """Record how the active (child) run started (see the module docstring). Every run of a
    night gets the same keys, so MLflow's compare view lines them up: a copied share per id
    field of the schema (`fields`; 0 for a cold run, and for a field the model has no rows
    of) and, when evaluated, the validation numbers before the first step."""
    mlflow.log_params({"warm_start": mode, "warm_start.from_version": ws.from_version or NONE})
    mlflow.set_tag("warm_start.fallback", ws.fallback[:_TAG_CHARS] or NONE)
    mlflow.set_tag("warm_start.not_copied", _listed(ws.not_copied)[:_TAG_CHARS] if ws.not_copied else NONE)
    shares = {f: 0.0 for f in fields} | (ws.copied_share if ws.warm else {})
    metrics = {f"warm_start.copied_share.{metric_name(f)}": share for f, share in shares.items()}
    if ws.initial_val_logloss is not None:
        metrics.update({"warm_start.initial_val_logloss": ws.initial_val_logloss,
                        "warm_start.initial_val_auc": ws.initial_val_auc, "warm_start.seconds": ws.seconds})
        # epoch 0 of the training curves: where the warm model starts
        mlflow.log_metrics({"epoch_val_logloss": ws.initial_val_logloss, "epoch_val_auc": ws.initial_val_auc}, step=0)
    mlflow.log_metrics(metrics)


def describe(ws: WarmStart) -> str:
    """One log line."""
    if not ws.warm:
        return f"cold start ({ws.fallback})"
    shares = ", ".join(f"{f} {s:.0%}" for f, s in ws.copied_share.items())
    fresh = f"; fresh: {_listed(ws.not_copied)}" if ws.not_copied else ""
    start = (f"; starts at val_logloss {ws.initial_val_logloss:.4f}, val_auc {ws.initial_val_auc:.4f}"
             if ws.initial_val_logloss is not None else "")
    return f"warm start from v{ws.from_version} (rows copied: {shares}){fresh}{start}"


def warm_start_note(candidates: list[Candidate]) -> str:
    """One line for the night's notes: which candidates started from the champion, and why
    the others started cold (grouped by reason)."""
    warm = [c for c in candidates if c.warm_start.warm]
    parts = [f"{', '.join(c.arch for c in warm)} from champion v{warm[0].warm_start.from_version}"] if warm else []
    cold: dict[str, list[str]] = {}
    for c in candidates:
        if not c.warm_start.warm:
            cold.setdefault(c.warm_start.fallback, []).append(c.arch)
    parts += [f"cold for {', '.join(archs)}: {reason}" for reason, archs in cold.items()]
    return "warm start: " + "; ".join(parts)


def metric_name(field: str) -> str:
    """A field name as MLflow accepts it in a metric key."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", field)


def _listed(items: dict[str, str]) -> str:
    shown = [f"{k} ({v})" for k, v in list(items.items())[:_LISTED]]
    more = f"; and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return "; ".join(shown) + more


@task(name="warm-start-source", cache_policy=NO_CACHE)
def warm_source_task(client: MlflowClient, name: str, preprocessor, mode: str, staging_day: date) -> WarmSource:
    """Load the champion tonight's challengers may start from (or say why there is none)."""
    source = load_source(client, name, preprocessor, mode, staging_day)
    log: Callable[[str], None] = get_run_logger().info
    log(f"warm start from champion v{source.version} ({source.arch})" if source.model is not None
        else f"no warm start tonight: {source.unavailable}")
    return source
