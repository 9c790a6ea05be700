"""Lightning's progress goes to stderr, so stdout carries only a command's results."""

from __future__ import annotations

import pytest

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Linear(2, 1)

    def training_step(self, batch, _idx):
        return self.w(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(callbacks, tmp_path) -> None:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 2)),
                                       batch_size=4)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, callbacks=callbacks,
                         default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(_Tiny(), data)


def test_progress_bar_writes_to_stderr_not_stdout(tmp_path, capfd):
    from geodiffloc.train.progress import StderrProgressBar

    _fit([StderrProgressBar()], tmp_path)
    out, err = capfd.readouterr()
    assert "Epoch 0" in err
    assert "Epoch 0" not in out


def test_lightnings_own_bar_would_write_to_stdout(tmp_path, capfd):
    # the reason StderrProgressBar exists: if Lightning moves its bar to stderr, drop it
    from lightning.pytorch.callbacks import TQDMProgressBar

    _fit([TQDMProgressBar()], tmp_path)
    out, _ = capfd.readouterr()
    assert "Epoch 0" in out


@pytest.mark.parametrize("enabled", [True, False])
def test_trainer_of_the_train_api_uses_the_stderr_bar(tmp_path, enabled):
    from geodiffloc.train.api import _trainer
    from geodiffloc.train.config import load_config
    from geodiffloc.train.progress import StderrProgressBar

    cfg = load_config({"family": "locdiff", "data": {"source": "arrays", "path": "x.npz"},
                       "trainer": {"enable_progress_bar": enabled, "accelerator": "cpu"}})
    trainer, _ = _trainer(cfg, tmp_path, None, [])
    bars = [cb for cb in trainer.callbacks if isinstance(cb, pl.callbacks.ProgressBar)]
    assert [type(b) for b in bars] == ([StderrProgressBar] if enabled else [])
