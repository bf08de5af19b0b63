"""Where a job's rows go: metrics.csv always (rundir's writer), TensorBoard and wandb when selected.
Each member of a job (a network or a replica) has its own loggers; none is shared between jobs.

The dashboards get the metrics.csv columns in four namespaces (train/, kernel/, transport/, certificate/),
TensorBoard a Custom Scalars layout that puts each measurement beside its bound, and HParams with the swept
keys first against the study's numbers; wandb plots against the step (flow_time alongside) and keeps the
certificate in its run summary."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import OmegaConf

from ..rundir import contract as RD


class MetricsLog(RD.CSVWriter):
    """metrics.csv as a logger: the same log_metrics / finalize calls as the dashboards'."""

    def __init__(self, run_dir: Path):
        super().__init__(Path(run_dir) / RD.METRICS, RD.COLUMNS)

    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        self.append(metrics)

    def finalize(self, status: str) -> None:
        pass


# every metrics.csv column but `step` (the dashboards' x axis) in one namespace
NAMESPACES = {
    "train": ("flow_time", "risk_train", "risk_test", "accuracy_train", "accuracy_test", "grad_norm2", "pl_ratio",
              "risk_predicted", "grad_norm2_u", "grad_norm2_u_lower"),
    "kernel": ("lambda_min_tangent", "lambda_min_tangent_resolution", "lambda_max_tangent", "risk_probe",
               "pl_ratio_probe", "pl_lower_bound", "rate_over_bound", "residual_top_share", "lambda_min_feature",
               "lambda_min_feature_mean", "lambda_min_feature_resolution", "feature_layers_unresolved",
               "lambda_min_feature_accuracy", "lambda_min_feature_lower", "kernel_movement", "linearization_distance",
               "feature_movement", "feature_movement_max"),
    "transport": ("cot_dist_init", "cot_dist_init_lower", "cot_dist_init_upper", "cot_dist_init_rel_width",
                  "path_length", "w2_dist_init", "w2_dist_init_lower", "w2_dist_init_upper", "depth_w2_uniform",
                  "depth_max_gap", "depth_effective_layers", "depth_path_length"),
    "certificate": ("path_over_radius", "lambda_ratio"),
}
STEP_KEY = "trainer/global_step"  # the step Lightning's WandbLogger adds to every row: wandb's x axis
DASHBOARD_NAMES = {col: f"{ns}/{col}" for ns, cols in NAMESPACES.items() for col in cols}
# TensorBoard's Custom Scalars tab: each measurement beside what bounds or predicts it
LAYOUT = {
    "train": {"risk (training, test, the flow's prediction)": ["train/risk_train", "train/risk_test",
                                                               "train/risk_predicted"],
              "P-Ł ratio and its kernel bound": ["train/pl_ratio", "kernel/pl_lower_bound"]},
    "kernel": {"λ_min(K) and its resolution": ["kernel/lambda_min_tangent", "kernel/lambda_min_tangent_resolution"],
               "min_l λ_min(K_l) and its proven lower bound": ["kernel/lambda_min_feature",
                                                               "kernel/lambda_min_feature_lower"],
               "feature learning": ["kernel/kernel_movement", "kernel/linearization_distance",
                                    "kernel/feature_movement"]},
    "transport": {"W_COT(μ_t, μ_0): value, bracket, path length": ["transport/cot_dist_init",
                                                                   "transport/cot_dist_init_lower",
                                                                   "transport/cot_dist_init_upper",
                                                                   "transport/path_length"]},
    "certificate": {"the certified region (path / R₀ < 1, λ ratio ≥ 1/2)": ["certificate/path_over_radius",
                                                                          "certificate/lambda_ratio"]},
}


def dashboard_metrics(row: Dict[str, float]) -> Dict[str, float]:
    """A metrics.csv row under the dashboards' names (`step` is their x axis, not a metric)."""
    return {DASHBOARD_NAMES.get(k, k): v for k, v in row.items() if k != "step"}


def study_numbers(summary: Dict[str, Any]) -> Dict[str, float]:
    """What a study compares runs by, from a summary: the final metrics, min P-Ł ratio, log10 of the risk
    ratio, the certificate's rate, guaranteed and observed factors, radius and whether the run stayed inside."""
    final = {f"final/{k}": v for k, v in (summary.get("final") or {}).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
    out = {**final, "study/min_pl_ratio": summary.get("min_pl_ratio")}
    risk0, risk = summary.get("risk_init"), (summary.get("final") or {}).get("risk_train")
    if risk0 and risk and risk0 > 0 and risk > 0:
        import math

        out["study/log10_risk_ratio"] = math.log10(risk / risk0)
    cert = summary.get("certificate") or {}
    for key in ("c0", "guaranteed_factor", "observed_factor", "certified_radius", "lambda_min_tangent_init"):
        out[f"certificate/{key}"] = cert.get(key)
    if cert.get("inside_certified_region") is not None:
        out["certificate/inside"] = float(bool(cert["inside_certified_region"]))
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and v == v}


def _namespaced(logger_class):
    """A Lightning logger class whose rows go to the dashboards under their namespaces."""

    class Namespaced(logger_class):
        swept_keys: List[str] = []

        def log_metrics(self, metrics, step=None):
            super().log_metrics(dashboard_metrics(metrics), step)

    Namespaced.__name__ = logger_class.__name__  # finalize_loggers tells them apart by name
    return Namespaced


def flat_config(cfg) -> Dict[str, Any]:
    """The config as one flat dict with dotted keys (searchable on dashboards); lists as strings."""
    flat = RD.flatten(OmegaConf.to_container(cfg, resolve=True))
    return {k: str(v) if isinstance(v, list) else v for k, v in flat.items()}


def make_loggers(cfg, run_dir: Path, wandb_id: str, name: str, group: Optional[str], start: int,
                 concurrent: bool, swept_keys: List[str] = ()) -> list:
    """metrics.csv (rows from `start` on dropped: a resumed run writes them again), TensorBoard, wandb.
    `concurrent`: several wandb runs live in this process at once (replicas). `swept_keys`: the keys this
    run's sweep varies (the job's overrides and its replica's), first in HParams."""
    csv = MetricsLog(run_dir)
    csv.start()
    csv.truncate_from(start)
    loggers: list = [csv]
    if cfg.logger.tensorboard is not None:
        from lightning.pytorch.loggers import TensorBoardLogger

        # purge_step: TensorBoard drops what a killed run logged after its checkpoint
        tb = _namespaced(TensorBoardLogger)(save_dir=str(run_dir), name="tensorboard", version="",
                                            default_hp_metric=False, purge_step=start or None)
        tb.swept_keys = list(swept_keys)
        if not start:
            tb.experiment.add_custom_scalars({cat: {title: ["Multiline", tags] for title, tags in charts.items()}
                                              for cat, charts in LAYOUT.items()})
        loggers.append(tb)
    if cfg.logger.wandb is not None:
        loggers.append(_wandb_logger(cfg, run_dir, wandb_id, name, group, concurrent))
    return loggers


def _wandb_logger(cfg, run_dir: Path, wandb_id: str, name: str, group: Optional[str], concurrent: bool):
    wc = cfg.logger.wandb
    if wc.quiet:  # before wandb reads its settings
        os.environ.setdefault("WANDB_SILENT", "true")
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    # our own wandb.init (Lightning's passes settings wandb now deprecates, which it warns about)
    run = wandb.init(project=wc.project, entity=wc.entity, mode=wc.mode, group=wc.group or group,
                     tags=list(wc.tags) + list(cfg.tags), name=name, dir=str(run_dir), config=flat_config(cfg),
                     reinit="create_new" if concurrent else "finish_previous", id=wandb_id, resume="allow",
                     settings=wandb.Settings(quiet=wc.quiet, console="off" if wc.quiet else "auto"))
    # panels against the training step (Lightning adds it to every row), not wandb's own row counter; the flow
    # time is a metric of its own, to pick as x axis
    run.define_metric(STEP_KEY, summary="max")
    run.define_metric("*", step_metric=STEP_KEY)
    return _namespaced(WandbLogger)(experiment=run)


def hparams_config(cfg, swept_keys: List[str]) -> Dict[str, Any]:
    """The configuration for HParams: the swept keys first, then the values that shape the flow (paths,
    loggers, plots and Hydra's own keys left out)."""
    flat = flat_config(cfg)
    skip = ("paths.", "logger.", "hydra.", "report.", "plots")
    shown = {k: v for k, v in flat.items() if not k.startswith(skip)}
    first = {k: shown[k] for k in swept_keys if k in shown}
    return {**first, **{k: v for k, v in shown.items() if k not in first}}


def finalize_loggers(loggers: List, cfg, summary: Dict[str, Any]) -> None:
    """The run's final numbers and status on the dashboards: TensorBoard's HParams (the swept keys first,
    against the study's numbers, so a sweep's runs compare there) and wandb's run summary; then close them."""
    numbers = study_numbers(summary)
    for lg in loggers:
        kind = type(lg).__name__
        if kind == "TensorBoardLogger":
            _hparams(lg.experiment, {**hparams_config(cfg, lg.swept_keys), "status": summary["status"]}, numbers,
                     summary.get("steps") or 0)
        elif kind == "WandbLogger":
            lg.experiment.summary.update({"status": summary["status"], "steps": summary.get("steps"),
                                          "flow_time": summary.get("flow_time"), **numbers})
            lg.experiment.finish()
            continue
        lg.finalize("success" if summary["status"] in RD.FINISHED else summary["status"])


def _hparams(writer, params: Dict[str, Any], metrics: Dict[str, float], step: int) -> None:
    """TensorBoard's HParams entry of the run: its configuration against its final numbers (logged as
    scalars at the final step, which is where the HParams tab reads them)."""
    from torch.utils.tensorboard.summary import hparams

    clean = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()}
    for part in hparams(clean, metrics):
        writer.file_writer.add_summary(part)
    for k, v in metrics.items():
        writer.add_scalar(k, v, step)
    writer.flush()
