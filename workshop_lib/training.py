"""The epoch loop shared by the trained methods (RD4AD, MMR, ResAD, MAE + LoRA).

One place for the progress bar, periodic checkpoints and ``resume``: a checkpoint holds the trainable
module's state, the optimizer's and the scheduler's, the finished epoch count, the loss history and the random
states (torch's global ones and the method's own generators: shuffling, masking, reference draws), written
atomically to ``<checkpoint_dir>/last.pt`` and read back with ``weights_only=True`` (no arbitrary pickles). With the
random states restored, a resumed run continues exactly as an uninterrupted one would.
"""

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .errors import CheckpointError, TrainingInterrupted
from .io import atomic_file

CHECKPOINT_FILE = "last.pt"


def checkpoint_folder(checkpoint_dir: str | Path | None, dataset: Dataset) -> Path | None:
    """``<checkpoint_dir>/<category>`` of the dataset's category: one folder per category, so a multi-category run
    resumes each one; ``checkpoint_dir`` itself for a dataset without one (ResAD's several classes)."""
    if checkpoint_dir is None:
        return None
    category = getattr(dataset, "category", "")
    return Path(checkpoint_dir) / category if category else Path(checkpoint_dir)


def shuffled_loader(dataset: Dataset, batch_size: int, seed: int) -> tuple[DataLoader, torch.Generator]:
    """A shuffling DataLoader and its seeded generator (checkpointed, so a resumed run shuffles as before)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator), generator


def count_parameters(module: nn.Module, trainable: bool = True) -> int:
    """Parameters that train (``trainable=True``) or stay frozen."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad == trainable)


def random_states(generators: Sequence[torch.Generator]) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generators": [generator.get_state() for generator in generators]}


def restore_random_states(states: dict[str, Any], generators: Sequence[torch.Generator], origin: Path) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if len(states["generators"]) != len(generators):
        raise ValueError(f"{origin} holds {len(states['generators'])} random generators, this training uses "
                         f"{len(generators)}: it was written by another method or version; delete it to start over.")
    for generator, state in zip(generators, states["generators"], strict=True):
        generator.set_state(state)


def save_checkpoint(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any | None,
                    epoch: int, losses: list[float], generators: Sequence[torch.Generator] = (),
                    settings: dict[str, Any] | None = None) -> None:
    state = {"module": module.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler is not None else None,
             "epoch": epoch, "losses": losses, "random": random_states(generators), "settings": settings}
    with atomic_file(path) as staging:
        torch.save(state, staging)


def check_resumable(path: Path, stored: dict[str, Any] | None, settings: dict[str, Any] | None, done: int,
                    epochs: int) -> None:
    """Refuse a checkpoint that another configuration wrote, or that trained further than ``epochs``; more epochs
    than the checkpoint's continue it (the documented way to train longer)."""
    if stored is not None and settings is not None:
        different = [f"{key}: {stored.get(key)!r} in the checkpoint, {settings.get(key)!r} now"
                     for key in sorted(set(stored) | set(settings)) if stored.get(key) != settings.get(key)]
        if different:
            raise CheckpointError(f"{path} was written with other settings ({'; '.join(different)}). Resume with the "
                                  "checkpoint's settings, or start over with another --checkpoint_dir (or without "
                                  "--resume).")
    if done > epochs:
        raise CheckpointError(f"{path} has already trained {done} epochs, more than the {epochs} asked for: pass "
                              f"--epochs {done} or more to use it, or start over with another --checkpoint_dir.")


def load_checkpoint(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any | None,
                    generators: Sequence[torch.Generator] = (), settings: dict[str, Any] | None = None,
                    epochs: int | None = None) -> tuple[int, list[float]]:
    """Restore states in place after ``check_resumable``; returns (finished epochs, loss history)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("settings") is None and settings is not None:
        print(f"{path} was written by an earlier version of the library: its settings cannot be checked.")
    check_resumable(path, state.get("settings"), settings, int(state["epoch"]), epochs or int(state["epoch"]))
    module.load_state_dict(state["module"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if "random" in state:  # checkpoints of earlier versions resume with fresh random states
        restore_random_states(state["random"], generators, path)
    return int(state["epoch"]), list(state["losses"])


def train_epochs(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[], Iterable[Any]],
    loss_of_batch: Callable[[Any], torch.Tensor],
    epochs: int,
    scheduler: Any | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: bool = True,
    description: str = "Training",
    generators: Sequence[torch.Generator] = (),
    settings: dict[str, Any] | None = None,
) -> list[float]:
    """Run ``epochs`` epochs (minus those a resumed checkpoint already did); returns mean loss per epoch.

    ``batches()`` gives one epoch's batches; ``loss_of_batch`` computes the loss to minimise. The scheduler,
    if any, steps once per batch. With ``resume=True`` and no checkpoint yet, training starts from epoch 0.
    ``generators`` are the random generators training draws from besides torch's global one (the loader's
    shuffling, masking noise...): checkpointed and restored with it. ``settings`` (the model's configuration) are
    stored in every checkpoint; a resumed one must match them (``check_resumable``). Ctrl+C stops with a
    ``TrainingInterrupted`` that says where the last checkpoint is.
    """
    checkpoint = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    if resume and checkpoint is None:
        raise CheckpointError("resume=True (--resume) needs the folder of the checkpoint: pass checkpoint_dir "
                              "(--checkpoint_dir), the same as in the run to continue.")
    start, losses = 0, []
    if resume and checkpoint.is_file():
        start, losses = load_checkpoint(checkpoint, module, optimizer, scheduler, generators, settings, epochs)
        print(f"Resuming {checkpoint}: {start} of {epochs} epochs done.")
    elif resume:
        print(f"No checkpoint in {checkpoint.parent} yet: training from the first epoch.")
    saved = start
    bar = tqdm(range(start, epochs), desc=description, disable=not progress, initial=start, total=epochs)
    try:
        for epoch in bar:
            module.train()
            total, count = 0.0, 0
            for batch in batches():
                loss = loss_of_batch(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                total, count = total + float(loss.detach()), count + 1
            losses.append(total / max(count, 1))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if checkpoint is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
                save_checkpoint(checkpoint, module, optimizer, scheduler, epoch + 1, losses, generators, settings)
                saved = epoch + 1
    except KeyboardInterrupt:
        bar.close()
        where = (f"The last checkpoint is {checkpoint} (epoch {saved}); run the same training again with --resume "
                 f"(resume=True) and --checkpoint_dir {checkpoint.parent} to continue from it."
                 if checkpoint is not None and saved else
                 "No checkpoint was written: pass --checkpoint_dir (checkpoint_dir=...) to be able to resume.")
        raise TrainingInterrupted(f"Training stopped after {len(losses)} of {epochs} epochs. {where}") from None
    module.eval()
    return losses
