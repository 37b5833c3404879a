"""Errors a user can act on: each message names the file and the fix."""


class WorkshopError(Exception):
    """Base class for the library's user-facing errors."""


class DatasetError(WorkshopError, ValueError):
    """A dataset folder, image or mask is missing or malformed."""


class WeightsUnavailableError(WorkshopError, RuntimeError):
    """Pretrained weights cannot be loaded (offline, wrong file, wrong architecture)."""


class ModelFileError(WorkshopError, ValueError):
    """A saved model folder is missing, incomplete or was written by another method."""


class UsageError(WorkshopError, ValueError):
    """A wrong command line or argument combination; the message says which flag and what to pass instead."""


class CheckpointError(WorkshopError, ValueError):
    """A checkpoint cannot be resumed: it is missing, of other settings, or further than asked for."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl+C (or a notebook's interrupt) during training; the message says where the last checkpoint is."""
