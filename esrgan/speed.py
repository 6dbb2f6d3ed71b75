"""The speed switches shared by training and upscaling: precision and torch.compile.

One place for their allowed values (the Sacred config, the trainers and the upscaling CLI all
check against these) and for how each is applied.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import nn

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
