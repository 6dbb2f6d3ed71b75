"""The speed switches shared by training and upscaling: precision, torch.compile, the Adam kernel
(and the deterministic switch, which trades some of that speed for reproducible kernels).

One place for their allowed values (the Sacred config, the trainers and the upscaling CLI all
check against these) and for how each is applied: where a network is wrapped for a training
step (:class:`Forward`), never inside the step's equations.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextlib import AbstractContextManager

import torch
from torch import Tensor, nn

from esrgan import distributed

PRECISIONS = ("fp32", "bf16")
# Training adds float16 autocast (GPUs before Ampere have no bf16), which needs a gradient
# scaler (:func:`grad_scaler`): the precisions of one network's forward pass ...
FORWARD_PRECISIONS = (*PRECISIONS, "fp16")
# ... and of a stage: '*-losses' puts the loss networks (VGG19, D) only in reduced precision;
# the generator and everything it outputs stay fp32 (so stage 1, L1 only, is plain fp32).
TRAINING_PRECISIONS = (*FORWARD_PRECISIONS, "bf16-losses", "fp16-losses")
# 'reduce-overhead' adds CUDA graphs on a GPU (the same as 'default' on a CPU);
# 'max-autotune' searches kernels per shape (minutes per shape on a CPU).
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """ValueError naming the switch and its allowed values."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


_AUTOCAST_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device_type: str, precision: str) -> AbstractContextManager:
    """bfloat16 ('bf16') or float16 ('fp16') autocast of the forward passes, a no-op context
    for 'fp32'.

    Parameters and optimiser states stay fp32; callers convert outputs with ``.float()``.
    """
    check_choice("precision", precision, FORWARD_PRECISIONS)
    return torch.autocast(device_type=device_type, dtype=_AUTOCAST_DTYPES[precision],
                          enabled=precision != "fp32")


def generator_precision(precision: str) -> str:
    """The arithmetic of the generator's forward pass under a training ``precision``."""
    check_choice("precision", precision, TRAINING_PRECISIONS)
    return "fp32" if precision.endswith("-losses") else precision


def loss_network_precision(precision: str) -> str:
    """The arithmetic of VGG19 and the discriminator under a training ``precision``."""
    check_choice("precision", precision, TRAINING_PRECISIONS)
    return precision.removesuffix("-losses")


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """The gradient scaler of one optimiser under a training ``precision``: active when any
    forward pass runs in float16 (its small gradients would flush to zero unscaled), else a
    disabled scaler whose ``scale``/``step`` are the plain backward and step.

    Its state (the scale and its growth counter) belongs in the checkpoint, so that a resumed
    run scales exactly as the uninterrupted one would.
    """
    check_choice("precision", precision, TRAINING_PRECISIONS)
    return torch.amp.GradScaler(device.type, enabled=precision.startswith("fp16"))


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels (``torch.use_deterministic_algorithms``) and the cuBLAS workspace
    setting they need on CUDA; a kernel with no deterministic version then raises instead of
    running. Call it before the first CUDA operation: cuBLAS reads CUBLAS_WORKSPACE_CONFIG
    when it starts. cuDNN's autotuner is turned off with it (it may pick other kernels on a
    rerun). On a CPU the kernels are deterministic already: it changes nothing there.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(enabled)


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
        check_choice("precision", precision, FORWARD_PRECISIONS)
        self.module, self.device_type, self.precision = module, device_type, precision
        self.clone = compile_mode == "reduce-overhead"

    def __call__(self, *args: Tensor) -> Tensor:
        with autocast(self.device_type, self.precision):
            out = self.module(*args)
            out = out.float()
        return out.clone() if self.clone else out


def wrap(module: nn.Module, device: torch.device, precision: str, compile_mode: str, *,
         parallel: bool = True) -> Forward:
    """The forward a training step calls: ``module`` wrapped for data parallelism (with
    ``parallel``; a no-op in one process), compiled per ``compile_mode``, under ``precision``
    autocast on ``device``."""
    if parallel:
        module = distributed.data_parallel(module, device)
    return Forward(compiled(module, compile_mode), device.type, precision, compile_mode)


def mark_step_begin(compile_mode: str) -> None:
    """Tell CUDA graphs (compile='reduce-overhead') that a new training step starts, so the
    previous step's graph outputs may be overwritten."""
    if compile_mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()
