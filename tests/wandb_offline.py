"""Read a wandb offline run (wandb 0.31 keeps history and config only in its binary .wandb file)."""
import glob
import json
import struct
from pathlib import Path


def wandb_records(path):
    """Records of a wandb offline run file (LevelDB log format: 32 KiB blocks, 7-byte headers,
    records split FULL / FIRST / MIDDLE / LAST), read without wandb's own reader."""
    raw = open(path, "rb").read()
    assert raw[:4] == b":W&B"
    pos, block, out, parts = 7, 32768, [], b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:
            pos += block - pos % block  # block trailer padding
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        parts = data if kind in (1, 2) else parts + data
        if kind in (1, 4):
            out.append(parts)
    return out


def wandb_run(run_dir):
    """{"id", "group", "config", "history", "summary", "metrics"} of the single offline run under <run_dir>/wandb."""
    from wandb.proto import wandb_internal_pb2

    (path,) = glob.glob(str(Path(run_dir) / "wandb" / "offline-run-*" / "run-*.wandb"))
    out = {"id": None, "group": None, "config": {}, "history": [], "summary": {}, "metrics": {}}
    for data in wandb_records(path):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            out["history"].append({it.key or "/".join(it.nested_key): json.loads(it.value_json)
                                   for it in rec.history.item})
        elif kind == "run":
            out["id"], out["group"] = rec.run.run_id, rec.run.run_group
            out["config"].update({it.key: json.loads(it.value_json) for it in rec.run.config.update})
        elif kind == "config":
            out["config"].update({it.key: json.loads(it.value_json) for it in rec.config.update})
        elif kind == "metric":  # define_metric: name (or glob) -> its step metric
            out["metrics"][rec.metric.name or rec.metric.glob_name] = rec.metric.step_metric
        elif kind == "summary":
            out["summary"].update({it.key: json.loads(it.value_json) for it in rec.summary.update})
    return out
