"""Multi-process data-parallel training (``torchrun``): the process group and global batch math.

``torchrun --nproc_per_node=N experiments/run.py with ...`` starts N processes; ``init`` joins
them (gloo on CPU, NCCL on CUDA). Without torchrun (no ``WORLD_SIZE`` > 1 in the environment)
every function here is the single-process identity, so the library has one code path.

What makes N processes compute the single-process step (same global batch, same seed):

- data: rank r of step k takes the r-th slice of the step's global batch (``StepSampler``),
  so the union over ranks is exactly the single-process batch;
- gradients: DistributedDataParallel averages the per-rank gradients of per-rank mean losses,
  which is the gradient of the global mean loss (equal slices per rank);
- batch statistics: the paper's losses take three means over the mini-batch that are not
  per-sample: RaGAN's E[C(x_f)] and E[C(x_r)], the perceptual normaliser (random-weight VGG)
  and BatchNorm (the discriminator's, and the generator's when ``bn=True``). Each is taken
  over the global batch here (``batch_mean``, ``GlobalBatchNorm2d``), with gradients through
  the all-reduce, so the maths is that of one process and only float summation order differs.

BatchNorm choice: synchronised (global-batch) statistics, not per-rank ones. Per-rank BN would
make the discriminator of an N-GPU run a different model (its statistics over batch/N images),
so an ablation cell's result would depend on the GPU count. torch's SyncBatchNorm is used on
CUDA; it refuses CPU tensors, so on CPU (gloo) ``GlobalBatchNorm2d`` does the same in a few
lines of autograd-visible maths.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

# A process group of its own for the batch statistics (BatchNorm, RaGAN means): their
# all-reduces then never interleave with DDP's gradient all-reduces on the default group.
_STATS_GROUP: Any = None


def world_size() -> int:
    """Number of processes in the job (1 without torchrun)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """True on the process that writes: observers, checkpoints, artifacts, evaluation."""
    return rank() == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def launch_world_size() -> int:
    """The process count torchrun announced (1 without torchrun); readable before ``init``."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launch_rank() -> int:
    """This process's rank as torchrun announced it (0 without torchrun); before ``init``."""
    return int(os.environ.get("RANK", "0"))


def launched_by_torchrun() -> bool:
    return launch_world_size() > 1


def init(device: torch.device, timeout_min: float = 60.0) -> torch.device:
    """Join the torchrun job (no-op otherwise); returns this process's device.

    On CUDA each process takes GPU ``LOCAL_RANK`` and the NCCL backend; elsewhere gloo. The
    timeout bounds how long a rank waits for the others (e.g. rank 0 validating).
    """
    if not launched_by_torchrun() or is_distributed():
        return _local_device(device)
    device = _local_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                            timeout=timedelta(minutes=timeout_min))
    global _STATS_GROUP
    _STATS_GROUP = dist.new_group()
    return device


def _local_device(device: torch.device) -> torch.device:
    if device.type == "cuda" and device.index is None and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def shutdown() -> None:
    global _STATS_GROUP
    if is_distributed():
        dist.destroy_process_group()
    _STATS_GROUP = None


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object): one decision for all."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is again a sum over ranks.

    With DDP averaging parameter gradients over N ranks, this gives exactly the gradient of a
    loss that uses the global sum (each rank's term reaches every other rank's inputs).
    """

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        out = tensor.clone()
        dist.all_reduce(out, group=_STATS_GROUP)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, group=_STATS_GROUP)
        return grad


def all_sum(tensor: Tensor) -> Tensor:
    """Differentiable sum of ``tensor`` over all ranks (identity in one process)."""
    return _AllReduceSum.apply(tensor) if is_distributed() else tensor


def batch_mean(tensor: Tensor) -> Tensor:
    """Mean of all elements over the global batch (every rank holds an equal slice)."""
    if not is_distributed():
        return tensor.mean()
    return all_sum(tensor.sum()) / (tensor.numel() * world_size())


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average scalar values (losses to log or check) over ranks; one small all-reduce."""
    if not is_distributed() or not values:
        return values
    packed = torch.tensor([float(v) for v in values.values()], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        packed = packed.cuda()
    dist.all_reduce(packed)
    return {k: float(v) / world_size() for k, v in zip(values, packed.tolist(), strict=True)}


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (CPU/gloo DDP).

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm2d``; in eval mode or in one
    process it is ``nn.BatchNorm2d``. Two passes (mean, then centred variance) for accuracy.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        xf = x.float()  # statistics in fp32 under bf16 autocast too
        count = x.numel() // x.shape[1] * world_size()
        mean = all_sum(xf.sum(dim=(0, 2, 3))) / count
        centred = xf - mean[None, :, None, None]
        var = all_sum((centred * centred).sum(dim=(0, 2, 3))) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else \
                    1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * count / max(count - 1, 1),
                                                  alpha=m)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(x.dtype)


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Swap every BatchNorm2d of ``module`` for its global-batch twin (in place; same state)."""
    if not is_distributed():
        return module
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            twin = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum,
                                     child.affine, child.track_running_stats)
            twin.load_state_dict(child.state_dict())
            twin.to(device=child.weight.device if child.affine else device)
            twin.train(child.training)
            setattr(module, name, twin)
        else:
            convert_batchnorm(child, device)
    return module


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel (itself in one process).

    Buffers are not broadcast at each forward: with global-batch BatchNorm every rank's
    running statistics are already the same. Construction broadcasts rank 0's parameters.
    """
    if not is_distributed():
        return module
    return nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None,
        broadcast_buffers=False)

