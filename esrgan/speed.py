"""The speed switches shared by training and upscaling: precision, torch.compile, the Adam kernel.

One place for their allowed values (the Sacred config, the trainers and the upscaling CLI all
check against these) and for how each is applied: where a network is wrapped for a training
step (:class:`Forward`), never inside the step's equations.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn

PRECISIONS = ("fp32", "bf16")
# Training adds 'bf16-losses': bf16 for the loss networks (VGG19, D) only; the generator and
# everything it outputs stay fp32 (so stage 1, L1 only, is plain fp32).
TRAINING_PRECISIONS = (*PRECISIONS, "bf16-losses")
# 'reduce-overhead' adds CUDA graphs on a GPU (the same as 'default' on a CPU);
# 'max-autotune' searches kernels per shape (minutes per shape on a CPU).
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """ValueError naming the switch and its allowed values."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def autocast(device_type: str, precision: str) -> AbstractContextManager:
    """bfloat16 autocast of the forward passes for 'bf16', a no-op context for 'fp32'.

    Parameters and optimiser states stay fp32; callers convert outputs with ``.float()``.
    """
    check_choice("precision", precision, PRECISIONS)
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16,
                          enabled=precision == "bf16")


def generator_precision(precision: str) -> str:
    """The arithmetic of the generator's forward pass under a training ``precision``."""
    check_choice("precision", precision, TRAINING_PRECISIONS)
    return "fp32" if precision == "bf16-losses" else precision


def loss_network_precision(precision: str) -> str:
    """The arithmetic of VGG19 and the discriminator under a training ``precision``."""
    check_choice("precision", precision, TRAINING_PRECISIONS)
    return "fp32" if precision == "fp32" else "bf16"


def compiled(module: nn.Module, mode: str, dynamic: bool | None = None) -> nn.Module:
    """``torch.compile(module, mode=mode)``, or ``module`` itself for 'off'.

    The compiled module shares the weights and forwards attribute access (``.scale``).
    ``dynamic=True`` when input sizes vary (tiles, images); None lets torch decide.
    """
    check_choice("compile", mode, COMPILE_MODES)
    if mode == "off":
        return module
    return torch.compile(module, mode=mode, dynamic=dynamic)


ADAM_IMPLS = ("auto", "fused", "foreach")


def adam(params: Iterable[Tensor], lr: float, betas: tuple[float, float], impl: str,
         device: torch.device) -> torch.optim.Adam:
    """Adam with the kernel ``impl`` asks for ('auto': fused on CUDA); the maths is the same."""
    check_choice("adam", impl, ADAM_IMPLS)
    fused = impl == "fused" or (impl == "auto" and device.type == "cuda")
    return torch.optim.Adam(params, lr=lr, betas=betas, **({"fused": True} if fused else {}))


class Forward:
    """A network's forward as a training step calls it, with the speed switches applied.

    ``module`` (already compiled or wrapped for data parallelism by the caller) runs under
    ``precision`` autocast on ``device_type``; its outputs come back as float32. With
    ``compile='reduce-overhead'`` (CUDA graphs) each output is cloned: a graph reuses its
    output memory on its next call, and D is called twice per step.
    """

    def __init__(self, module: nn.Module, device_type: str, precision: str,
                 compile_mode: str = "off") -> None:
        check_choice("precision", precision, PRECISIONS)
        self.module, self.device_type, self.precision = module, device_type, precision
        self.clone = compile_mode == "reduce-overhead"

    def __call__(self, *args: Tensor) -> Tensor:
        with autocast(self.device_type, self.precision):
            out = self.module(*args)
            out = out.float()
        return out.clone() if self.clone else out


def mark_step_begin(compile_mode: str) -> None:
    """Tell CUDA graphs (compile='reduce-overhead') that a new training step starts, so the
    previous step's graph outputs may be overwritten."""
    if compile_mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()
