"""Data-parallel training on several processes: PyTorch's elastic launcher (torchrun) and
DistributedDataParallel, with the same meaning as one process.

    trainwell fit RECIPE --nproc N          N local workers through torch.distributed's elastic launcher
    torchrun ... -m trainwell fit RECIPE    any number of machines; trainwell reads torchrun's environment

Every worker builds the same Setup (same seed, same data, same initial weights) and walks the same
seeded permutation of the training rows. `train.batch_size` stays the global batch: worker r takes
the r-th of N near-equal contiguous parts of every batch and scales its loss by N x its share of
the batch's rows, so DDP's average of the workers' gradients is exactly the gradient of the whole
batch's mean loss, even when the last batch does not split evenly. Clipping then sees the global
norm (every worker holds the averaged gradients). Batch norm becomes synchronized batch norm
(statistics over the global batch) unless `model.sync_batchnorm = false`.

Decisions are the same on every worker: the training row is reduced over the workers, the
validation split is evaluated once (rank 0) and its row broadcast, and rank 0's stop reason, its
clock (time-based checkpoints) and any worker's Ctrl-C / SIGTERM are shared. Rank 0 alone writes
the run folder; its checkpoints hold every worker's own state (RNG streams and the running sums of
its share of the epoch), so a resume with the same number of workers continues bit for bit.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import sys
import threading
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from . import checkpoint as ckpt
from .build import pick_device
from .errors import Interrupted, RecipeError, RunDirError
from .loop import Trainer
from .seeding import host_states, set_host_states
from .world import ENV, World, launched  # noqa: F401  (the launcher's environment, read without torch)

RANK_SEED_STRIDE = 1_000_003      # rank r > 0 draws dropout and augmentation from seed + r x this


def current() -> World | None:
    """This process's place in a data-parallel run, or None on one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return None
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def backend_for(backend: str, device: str) -> str:
    """--backend auto: nccl for CUDA workers, gloo on CPU. nccl without CUDA is bad input."""
    cuda = torch.cuda.is_available()
    if backend == "auto":
        return "nccl" if device == "cuda" or (device == "auto" and cuda) else "gloo"
    if backend == "nccl" and not cuda:
        raise RecipeError(["--backend nccl: needs CUDA, but no CUDA device is available; use --backend gloo "
                           "(CPU workers)"])
    return backend


def init_worker(world: World, backend: str, device: str) -> None:
    """Join the process group torchrun's environment describes (one GPU per worker on CUDA)."""
    backend = backend_for(backend, device)
    if backend == "nccl":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend, timeout=timedelta(minutes=float(os.environ.get(
        "TRAINWELL_DIST_TIMEOUT_MINUTES", "10"))))


def finish(world: World | None) -> bool:
    """After training: leave the process group, and whether this process concludes the run (the test
    split, metrics, report): one process, or rank 0 alone."""
    if world is None:
        return True
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return world.main


# ------------------------------------------------------------------------------ checks before a launch
def check_launch(recipe, nproc: int, backend: str) -> str:
    """Bad input that needs no data, refused before any worker starts (so nothing is written)."""
    t = recipe.train
    device = pick_device(t.device)
    if nproc > t.batch_size:
        raise RecipeError([f"--nproc: got {nproc} workers, more than the {t.batch_size} rows of each batch "
                           f"(train.batch_size = {t.batch_size}); use at most {t.batch_size} workers or a larger "
                           "train.batch_size"])
    if device.type == "cuda" and nproc > torch.cuda.device_count():
        raise RecipeError([f"--nproc: got {nproc} workers, but only {torch.cuda.device_count()} CUDA devices "
                           "(one per worker); use fewer workers or train.device = \"cpu\""])
    if device.type == "mps":
        raise RecipeError(["train.device: 'mps' cannot be shared by several workers; use \"cpu\" with --nproc"])
    check_supported(recipe, nproc)
    return backend_for(backend, t.device)


def check_supported(recipe, nproc: int) -> None:
    """What data-parallel training does not do (yet): one line each."""
    problems = []
    if recipe.watch.on_nan == "rollback":
        problems.append(f"watch.on_nan: 'rollback' replays batch by batch on one process; with {nproc} workers "
                        "use \"stop\" (then resume with --set watch.on_nan=rollback on one process)")
    if recipe.train.compile:
        problems.append(f"train.compile: the compiled forward is one process's; with {nproc} workers use false")
    if recipe.train.average.kind == "ensemble":
        problems.append(f"train.average.kind: got \"ensemble\", members train one after the other on one "
                        f"process; choose another kind with {nproc} workers")
    if problems:
        raise RecipeError(problems)


def check_shares(setup, world: World, sync_bn: bool) -> None:
    """Batch norm that is not synchronized normalizes each worker's share alone: every share must
    then hold at least 2 rows (the smallest is the last batch's, split N ways)."""
    if sync_bn or not has_batchnorm(setup.model):
        return
    s, n = setup.settings, len(setup.train)
    last = s.batch_size if s.drop_last or n % s.batch_size == 0 else n % s.batch_size
    if last == 1:
        last = s.batch_size          # one process drops a last batch of one row with batch norm too
    smallest = min(s.batch_size, last) // world.size
    if smallest < 2:
        raise RecipeError([f"model.sync_batchnorm: false, but with {world.size} workers a batch of "
                           f"{min(s.batch_size, last)} rows (of {n} training rows, train.batch_size = "
                           f"{s.batch_size}) leaves a worker {smallest} row(s), too few for its own batch norm; "
                           "set model.sync_batchnorm = true, train.drop_last = true or another train.batch_size"])


def check_resume(meta: dict[str, Any], nproc: int, run_dir: Path) -> None:
    """A checkpoint written by N workers resumes on N workers only: the shards, the workers' random
    streams and their running sums would not mean the same otherwise."""
    saved = int(meta.get("workers", 1))
    if saved != nproc:
        raise RunDirError(f"{run_dir}: the checkpoint was written by {saved} worker(s), resumed with {nproc}; "
                          f"resume with --nproc {saved} (the shards and each worker's random streams depend on "
                          "the worker count)")


# ------------------------------------------------------------------------------ launching local workers
def launch(argv: list[str], nproc: int, run_dir: Path | None = None) -> int:
    """Start `python -m trainwell ARGV` on `nproc` local workers through the elastic launcher (the
    machinery of torchrun --standalone); returns the command's exit code."""
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed.elastic")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)   # trainwell says what happened, in one line
    if "OMP_NUM_THREADS" not in os.environ:     # train.threads, when set, wins inside each worker
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.1, start_method="spawn")
    try:
        elastic_launch(config, sys.executable)("-m", "trainwell", *argv)
    except ChildFailedError as exc:
        return _report_failure(exc, nproc, run_dir)
    except SignalException:          # Ctrl-C / SIGTERM: passed on to the workers, which saved and said so
        return 130
    return 0


def lost_peer(exc: BaseException) -> str | None:
    """On a worker: the one line for a collective that failed because another worker is gone."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    if not (isinstance(exc, dist.DistError) or any(w in text for w in ("gloo", "Connection", "NCCL", "closed"))):
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return (f"worker {os.environ.get('RANK', '?')}: lost another worker ({first[:160]}); the run stops, its last "
            "complete checkpoint is kept")


def _report_failure(exc, nproc: int, run_dir: Path | None) -> int:
    """One line for the failure that stopped the run. A worker's own error (bad input, Ctrl-C) was
    already printed by rank 0, and the launcher then ended the others: its exit code is the run's.
    A worker killed by a signal from outside is named here."""
    failures = exc.failures
    codes = {f.exitcode for f in failures.values()}
    for code in (2, 130):
        if code in codes:
            return code
    killed = {rank: f for rank, f in failures.items() if f.exitcode < 0}
    if killed:
        rank, f = min(killed.items(), key=lambda kv: kv[1].timestamp)
        try:
            name = signal.Signals(-f.exitcode).name
        except ValueError:
            name = f"signal {-f.exitcode}"
        where = (f"; the last complete checkpoint is kept in {run_dir}; resume with: trainwell resume {run_dir} "
                 f"--nproc {nproc}") if run_dir is not None else ""
        print(f"trainwell: error: worker {rank} (pid {f.pid}) was killed by {name}; the run stopped and the "
              f"other workers were ended{where}", file=sys.stderr)
        return 1
    ranks = ", ".join(f"worker {r} exit {f.exitcode}" for r, f in sorted(failures.items()))
    print(f"trainwell: error: the run stopped: {ranks} (see the worker's message above)", file=sys.stderr)
    return 1


def worker_argv(argv: list[str], out: Path | None) -> list[str]:
    """The command line each worker runs: ARGV without --nproc, with the run folder rank 0 will use."""
    out_argv, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        out_argv.append(arg)
    if out is not None and "--out" not in out_argv and not any(a.startswith("--out=") for a in out_argv):
        out_argv += ["--out", str(out)]
    return out_argv


# ------------------------------------------------------------------------------ the model
_IN_STEP = threading.local()       # set while a worker's training step runs its forward pass


class _AllReduceSum(torch.autograd.Function):
    """Sum over the workers; the gradient of each worker's input is the sum of the workers' gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm with statistics over the global batch of all workers, on any device (torch's own
    SyncBatchNorm runs on GPUs only). Inside a worker's training step: mean and variance from
    all-reduced sums (two passes: sums, then squared deviations), the gradient flows back through
    the all-reduce, and the running statistics take the global unbiased variance, as one process on
    the whole batch would. Anywhere else (rank 0's probes, evaluation, after training) it is plain
    batch norm, so no worker waits for the others; its state_dict is batch norm's."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and getattr(_IN_STEP, "on", False)):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dtype, x = x.dtype, x.float()          # statistics in float32, also under a mixed precision
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, channels] + [1] * (x.dim() - 2)
        count = torch.full((1,), x.numel() // max(channels, 1), dtype=x.dtype, device=x.device)
        summed = all_reduce(torch.cat([x.sum(dims), count]))
        n = summed[-1]
        mean = summed[:-1] / n
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                self.running_var.mul_(1 - f).add_(var.detach() * (n / (n - 1)).clamp(min=0), alpha=f)
        return y.to(dtype)


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """Batch norm layers -> SyncBatchNorm ones, in place (the same parameters and buffers, so the
    optimizer and the checkpoints are unchanged)."""
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SyncBatchNorm):
            new = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(model, name, new)
        else:
            sync_batchnorm(child)
    return model


class _StepForward(nn.Module):
    """The model the training step calls on a worker: DDP, with batch norm synchronized."""

    def __init__(self, ddp: nn.Module):
        super().__init__()
        self.ddp = ddp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _IN_STEP.on = True
        try:
            return self.ddp(x)
        finally:
            _IN_STEP.on = False


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def seed_worker(setup, seed: int, world: World) -> None:
    """Worker r > 0 draws dropout and augmentation from its own streams (rank 0 keeps one process's,
    so one worker is one process)."""
    if world.rank == 0:
        return
    own = seed + RANK_SEED_STRIDE * world.rank
    torch.manual_seed(own)
    if setup.augment is not None:
        setup.augment.load_state_dict({"generator": torch.Generator().manual_seed(own + 2).get_state()})


# ------------------------------------------------------------------------------ the trainer
class DataParallelTrainer(Trainer):
    """The Trainer on one worker of N: its share of every batch through DDP, decisions shared."""

    def __init__(self, setup, *, world: World, writes: bool, sync_bn: bool, **kwargs):
        model = setup.model
        local_bn = has_batchnorm(model) and not sync_bn
        if sync_bn and has_batchnorm(model):
            sync_batchnorm(model)
        ids = [setup.device.index if setup.device.index is not None else torch.cuda.current_device()] \
            if setup.device.type == "cuda" else None
        # Synchronized batch norm keeps the same running statistics on every worker: nothing to broadcast.
        # Each worker's own batch norm drifts apart: rank 0's statistics are copied before every forward.
        sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(
            nn.parallel.DistributedDataParallel).parameters else "broadcast_buffers"   # (torch >= 2.13's name)
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids, **{sync: local_bn})
        super().__init__(replace(setup, model=_StepForward(ddp), forward=None), **kwargs)  # the step: DDP ...
        self.model = model                                       # ... everything else sees the plain module
        self.world = world
        self._writes = writes                                    # rank 0 writes a run folder
        self._saves_mid_epoch = bool(self.settings.every_steps or self.settings.every_minutes) and writes

    # --- the batch: this worker's share
    def _share(self, idx: torch.Tensor) -> tuple[int, torch.Tensor, float]:
        parts = torch.tensor_split(idx, self.world.size)
        at = sum(len(p) for p in parts[:self.world.rank])
        mine = parts[self.world.rank]
        return at, mine, self.world.size * len(mine) / len(idx)

    # --- decisions made once
    def _all_ranks(self, ok: bool) -> bool:
        flag = torch.tensor([1 if ok else 0], device=self.setup.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def _interrupted(self) -> bool:
        local = self.interrupts.requested if self.interrupts is not None and self.interrupts.requested else 0
        signum = torch.tensor([local], device=self.setup.device)
        dist.all_reduce(signum, op=dist.ReduceOp.MAX)
        if signum.item() and self.interrupts is not None and not self.interrupts.requested:
            self.interrupts.requested = int(signum.item())    # another worker was signalled: stop here too
        return bool(signum.item())

    def _save_due(self) -> bool:
        if not self._saves_mid_epoch:
            return False
        due = torch.tensor([1 if self.world.main and super()._save_due() else 0], device=self.setup.device)
        dist.broadcast(due, src=0)            # rank 0's clock decides
        return bool(due.item())

    def _validate(self) -> dict[str, float]:
        """Rank 0 evaluates the whole split (the same numbers as one process) and shares the row."""
        return broadcast_from_main(super()._validate() if self.world.main else None)

    def _epoch_summary(self, cur) -> dict[str, float]:
        dist.all_reduce(cur.loss_sum)             # each worker summed its own rows' losses
        if cur.preds is not None:
            dist.all_reduce(cur.preds)            # each worker filled its own rows (zeros elsewhere)
        return super()._epoch_summary(cur)

    def _epoch(self) -> None:
        super()._epoch()
        st = self.state
        shared = [(st.stop_reason, st.stopped_epoch)]
        dist.broadcast_object_list(shared, src=0)  # a rank-0 callback (probes) may have stopped the run
        st.stop_reason, st.stopped_epoch = shared[0]

    # --- checkpoints: rank 0 writes every worker's own state
    def _own_state(self) -> dict[str, Any]:
        tensors = {"rng.torch": torch.get_rng_state()}
        if self.setup.augment is not None:
            tensors["rng.augment"] = self.setup.augment.state_dict()["generator"]
        cur = self.state.cursor
        if cur is not None:
            tensors["cursor.loss_sum"] = cur.loss_sum.cpu()
            if cur.preds is not None:
                tensors["cursor.preds"] = cur.preds.cpu()
        return {"tensors": tensors, "meta": host_states()}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        every: list[Any] = [None] * self.world.size
        dist.all_gather_object(every, self._own_state())
        if not self.world.main:
            return {}, {}
        tensors, meta = super().state_dict()
        for rank, own in enumerate(every[1:], start=1):
            tensors.update(ckpt.prefixed(f"rank{rank}", own["tensors"]))
            meta[f"rank{rank}"] = own["meta"]
        meta["workers"] = self.world.size
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        super().load_state_dict(tensors, meta)        # the shared state, and rank 0's own
        if self.world.main:
            return
        own = ckpt.unprefixed(f"rank{self.world.rank}", tensors)
        torch.set_rng_state(own["rng.torch"])
        if self.setup.augment is not None and "rng.augment" in own:
            self.setup.augment.load_state_dict({"generator": own["rng.augment"]})
        set_host_states(meta[f"rank{self.world.rank}"])
        cur = self.state.cursor
        if cur is not None:
            cur.loss_sum = own["cursor.loss_sum"].to(self.setup.device)
            if cur.preds is not None:
                cur.preds = own["cursor.preds"].to(self.setup.device)

    def _interrupt(self):
        try:
            super()._interrupt()
        except Interrupted as exc:            # its last words are the resume command: add the worker count
            raise Interrupted(f"{exc} --nproc {self.world.size}" if "resume with:" in str(exc) else str(exc)) \
                from None

    def _write_state(self, best: bool, force_last: bool = False) -> None:
        if self.world.main:
            super()._write_state(best, force_last)
        elif self._writes and (self.settings.save_last or force_last):
            self.state_dict()                     # this worker's share of rank 0's checkpoint


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every worker (e.g. the recipe and checkpoint a resume read)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
