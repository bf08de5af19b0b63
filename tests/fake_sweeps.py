"""Sweep directories with made-up results, for the report's tests (no training)."""
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from cotresnet.config.compose import CONF_DIR
from cotresnet.rundir import contract as RD
from cotresnet.sweeps.expand import sweep_jobs


def fake_sweep(tmp_path: Path, experiment: str) -> Path:
    """The experiment's jobs with made-up results: job 1 failed, job 2 diverged, the others finished with
    metrics spanning several decades (job k: 10^-k)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    sweep = tmp_path / experiment
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", f"hydra.sweep.dir={sweep}"],
                      return_hydra_config=True)
        jobs = list(sweep_jobs(cfg))
    for k, (overrides, job_cfg, job_dir) in enumerate(jobs):
        (job_dir / ".hydra").mkdir(parents=True)
        OmegaConf.save(job_cfg, job_dir / ".hydra" / "config.yaml", resolve=True)  # as a job writes it
        (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*overrides]))
        steps = [0, 10, 20]
        rows = [{"step": s, "flow_time": 0.1 * s, "risk_train": 10.0 ** (-k * s / 20)} for s in steps]
        if k == 1:
            RD.write_summary(job_dir, {"status": "failed", "error": "RuntimeError: boom"})
            continue
        writer = RD.CSVWriter(job_dir / RD.METRICS, RD.COLUMNS)
        for r in rows:
            writer.append(r)
        value = 1e30 if k == 2 else 10.0 ** (-k)
        final = {m: value for m in RD.COLUMNS if m not in ("step", "flow_time")}
        RD.write_summary(job_dir, {"status": "diverged" if k == 2 else "max_steps", "steps": 20, "flow_time": 2.0,
                                   "final": {**final, "risk_train": 10.0 ** (-k) if k != 2 else 1e30, "step": 20},
                                   "risk_init": 1.0, "min_pl_ratio": value, "diverged_at": 20 if k == 2 else None,
                                   "lambda_min_feature_layers": {"init": [value, 2 * value]},
                                   "certificate": {"resolved": True, "lambda_min_tangent_init": value, "kind": "full"}})
    return sweep
