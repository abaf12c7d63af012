"""The error hierarchy. Every error a user can fix derives from TrainwellError: the CLI prints
its message as one line and exits 2. Anything else is a bug and keeps its traceback."""

from __future__ import annotations


class TrainwellError(Exception):
    """A problem with the user's input (recipe, data, arguments, run folder): exit code 2."""

    exit_code = 2


class RecipeError(TrainwellError):
    """One or more recipe fields are invalid. `problems` lists every one, each as one line."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = f"{where}{self.problems[0]}"
        else:
            msg = f"{where}{len(self.problems)} problems: " + "; ".join(self.problems)
        super().__init__(msg)


class RecipeDeprecation(FutureWarning):
    """A recipe key that still works but has a new name: shown as one line, the run goes on."""


class DataError(TrainwellError):
    """The data cannot be loaded or does not fit the recipe."""


class CheckpointError(TrainwellError):
    """A checkpoint is missing, corrupt, unsafe, or does not match the run."""


class RunDirError(TrainwellError):
    """The run folder cannot be used (exists, locked, unwritable)."""


class WriteError(RunDirError):
    """A file of the run folder could not be written (disk full, I/O error). The previous version of
    the file is intact; it is not the user's input, so the exit code is 1."""

    exit_code = 1


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run after a resumable checkpoint was saved: exit code 130.
    A KeyboardInterrupt, so code that catches Ctrl-C keeps working."""

    exit_code = 130


class TestSplitLocked(TrainwellError):
    """Something tried to read the test split while hyperparameters are being chosen."""

    __test__ = False      # not a pytest test class, despite the name
    exit_code = 1
