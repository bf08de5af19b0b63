"""A resumed job reads its checkpoint once: the checks load it (memory-mapped), Lightning's restore gets
that dict, a replan under the lock reuses it unless the file changed."""
import torch

from cotresnet.config.compose import compose_config
from cotresnet.job.checks import check_job, replan
from helpers import SMALL, train_small


def counting_loads(monkeypatch):
    reads = []
    real = torch.load

    def load(f, *args, **kwargs):
        reads.append(str(getattr(f, "path", getattr(f, "name", f))))
        return real(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    return reads


def test_a_resumed_job_reads_its_checkpoint_once(tmp_path, monkeypatch):
    train_small(tmp_path / "run", "trainer.max_steps=4", "trainer.converge_ratio=0")
    reads = counting_loads(monkeypatch)
    summary, _ = train_small(tmp_path / "run", "trainer.max_steps=8", "trainer.converge_ratio=0", action="resume")
    assert summary["steps"] == 8 and len(reads) == 1 and reads[0].endswith("last.ckpt"), reads


def test_a_replan_reloads_a_checkpoint_only_when_the_file_changed(tmp_path, monkeypatch):
    train_small(tmp_path / "run", "trainer.max_steps=4", "trainer.converge_ratio=0")
    check = check_job(compose_config([*SMALL, "trainer.max_steps=8", "trainer.converge_ratio=0", "plots=[]"]),
                      tmp_path / "run")
    reads = counting_loads(monkeypatch)
    first = check.checkpoint
    assert replan(check).checkpoint is first and reads == []
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes())  # another job rewrote it: another inode or mtime
    assert replan(check).checkpoint is not first and len(reads) == 1
