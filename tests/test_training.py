"""The shared epoch loop: an interrupted run resumed from its checkpoint ends exactly as an uninterrupted one."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from workshop_lib.training import CHECKPOINT_FILE, train_epochs

EPOCHS = 4


class Crash(RuntimeError):
    pass


def run(checkpoint_dir, resume: bool = False, crash_in_epoch: int | None = None):
    """A linear model trained on shuffled data with noise from torch's global RNG and from its own generator."""
    torch.manual_seed(0)
    module = nn.Linear(3, 1)
    data = TensorDataset(torch.arange(24.0).reshape(8, 3) / 24, torch.linspace(0, 1, 8)[:, None])
    shuffling, noise = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    loader = DataLoader(data, batch_size=3, shuffle=True, generator=shuffling)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    epochs_started = []

    def batches():
        epochs_started.append(len(epochs_started))
        if crash_in_epoch is not None and len(epochs_started) == crash_in_epoch:
            raise Crash
        return loader

    def loss_of_batch(batch):
        x, y = batch
        x = x + 0.01 * torch.randn(x.shape) + 0.01 * torch.randn(x.shape, generator=noise)
        return ((module(x) - y) ** 2).mean()

    losses = train_epochs(module, optimizer, batches, loss_of_batch, EPOCHS, checkpoint_dir=checkpoint_dir,
                          resume=resume, progress=False, generators=[shuffling, noise])
    return losses, module.weight.detach().clone()


def test_resumed_run_continues_exactly(tmp_path):
    uninterrupted, weight = run(tmp_path / "a")
    with pytest.raises(Crash):
        run(tmp_path / "b", crash_in_epoch=3)  # epochs 1 and 2 done and checkpointed
    assert torch.load(tmp_path / "b" / CHECKPOINT_FILE, weights_only=True)["epoch"] == 2
    resumed, resumed_weight = run(tmp_path / "b", resume=True)
    assert resumed == uninterrupted and len(resumed) == EPOCHS
    assert torch.equal(resumed_weight, weight)


def test_checkpoint_of_another_training_is_refused(tmp_path):
    run(tmp_path)
    module = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="random generators"):
        train_epochs(module, optimizer, lambda: [], lambda batch: batch, EPOCHS + 1, checkpoint_dir=tmp_path,
                     resume=True, progress=False)
