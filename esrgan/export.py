"""Export a generator for the tools SR models are shared and deployed with, checked numerically.

    python -m esrgan.export G.pth --onnx G.onnx [--opset 17]
    python -m esrgan.export G.pth --spandrel G_x4.pth          # or G_x4.safetensors
    python -m esrgan.export G.pth --onnx G.onnx --spandrel G_x4.pth --params params_ema

``G.pth`` is any file ``esrgan.weights`` reads (this suite's ``G_psnr.pth`` / ``G_gan.pth``,
BasicSR, xinntao or pre-2019 ESRGAN files, ``.pth`` or ``.safetensors``); ``--params`` picks
``params`` or ``params_ema`` of a BasicSR file (default ``auto``: ``params_ema`` when present).

- ``--onnx``: the generator in fp32, input ``input`` and output ``output`` (N x C x H x W,
  values in [0, 1] in, unclamped out, as the PyTorch module), with the batch, height and width
  dynamic. Before the file is written, onnxruntime runs it on a random input of another batch
  and size than the one traced and the largest difference from PyTorch is printed; above
  ``--tolerance`` (relative to the output's range) nothing is written and the command fails.
  The build arguments are kept in the model's metadata (``esrgan.arch``, ``scale``).
- ``--spandrel``: the weights as a plain state dict in BasicSR's RRDBNet key names, the layout
  spandrel (the model loader of chaiNNer and OpenModelDB) detects as ESRGAN; ``.safetensors``
  or torch ``.pth`` by the name. spandrel's ESRGAN has the paper's RDB growth (``gc`` 32), no
  BatchNorm and residual scaling 0.2 built in, so only generators with those settings can be
  represented: others are refused with one line (export them with ``--onnx``). When spandrel
  is installed the file is loaded back with it and its output compared with PyTorch's.

This suite's ``.pth`` files (``{'params', 'params_ema', 'arch'}``) already load in spandrel
(it takes ``params_ema`` when present, as ``--params auto``); its ``.safetensors`` files
(grouped ``params.<key>`` names) do not, hence ``--spandrel``.

Outputs are checked for writability before any work and written atomically; every problem is
one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from esrgan.files import atomic_write, check_output_path
from esrgan.weights import PARAMS_CHOICES, PARAMS_HELP, load_generator, save_checkpoint

ONNX_OPSET = 17  # onnxruntime 1.12+ and every current ONNX consumer run it
TRACE_SIZE = (1, 32, 32)  # batch, H, W of the input the exporter traces
CHECK_SIZE = (2, 27, 45)  # another batch and odd sizes: the dynamic axes must really be dynamic
TOLERANCE = 1e-4  # largest |ONNX - PyTorch| allowed, relative to max(1, max |PyTorch output|)
# what spandrel's ESRGAN (RRDBNet) fixes in its code: the paper's RDB growth, no BatchNorm,
# residual scaling 0.2, an RRDB trunk
SPANDREL_FIXED = {"trunk": "rrdb", "bn": False, "gc": 32, "beta": 0.2}


class ExportError(ValueError):
    """An export that cannot be made or does not reproduce the PyTorch generator."""


def _random_input(model: nn.Module, size: tuple[int, int, int], seed: int) -> Tensor:
    batch, h, w = size
    channels = int(model.arch.get("in_ch", 3)) if hasattr(model, "arch") else 3
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, h, w, generator=generator)


def _max_difference(reference: Tensor, other: Tensor | np.ndarray) -> tuple[float, float]:
    """(max |reference - other|, the tolerance scale max(1, max |reference|))."""
    other = torch.as_tensor(np.asarray(other)) if not isinstance(other, Tensor) else other
    if tuple(other.shape) != tuple(reference.shape):
        raise ExportError(f"output shape {tuple(other.shape)} differs from PyTorch's "
                          f"{tuple(reference.shape)}")
    diff = float((reference.float() - other.float()).abs().max())
    return diff, max(1.0, float(reference.abs().max()))


def onnx_bytes(model: nn.Module, opset: int = ONNX_OPSET) -> bytes:
    """The fp32 ONNX model of ``model`` (eval mode, on the CPU) with dynamic batch, H and W."""
    import onnx

    model = model.float().cpu().eval()
    example = _random_input(model, TRACE_SIZE, seed=0)
    buffer = io.BytesIO()
    axes = {"input": {0: "batch", 2: "height", 3: "width"},
            "output": {0: "batch", 2: "out_height", 3: "out_width"}}
    with warnings.catch_warnings():
        # the TorchScript-based exporter (dynamo=False) is deprecated but needs no onnxscript,
        # and it exports this network's nearest upsampling with dynamic sizes exactly
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["output"], dynamic_axes=axes,
                          do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    arch = getattr(model, "arch", None)
    if arch is not None:
        for key, value in (("esrgan.arch", json.dumps(arch)), ("scale", str(arch["scale"]))):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def check_onnx(model: nn.Module, data: bytes, size: tuple[int, int, int] = CHECK_SIZE,
               tolerance: float = TOLERANCE) -> float:
    """Run the ONNX model ``data`` in onnxruntime against ``model`` on a random input of
    ``size`` (batch, H, W); returns max |difference|. Raises ExportError above ``tolerance``
    (relative to max(1, max |PyTorch output|))."""
    import onnxruntime

    model = model.float().cpu().eval()
    x = _random_input(model, size, seed=1)
    with torch.no_grad():
        reference = model(x)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are not the user's
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    (out,) = session.run(["output"], {"input": x.numpy()})
    diff, scale = _max_difference(reference, out)
    if not diff <= tolerance * scale:
        shape = "x".join(map(str, x.shape))
        raise ExportError(f"onnxruntime differs from PyTorch by up to {diff:.3g} on a {shape} "
                          f"input (tolerance {tolerance * scale:.3g})")
    return diff


def spandrel_problem(arch: dict[str, Any]) -> str | None:
    """Why spandrel's ESRGAN cannot represent a generator of ``arch`` (None: it can)."""
    wrong = [f"{k} {arch.get(k)!r} (spandrel: {v!r})" for k, v in SPANDREL_FIXED.items()
             if (abs(float(arch.get(k, 0)) - v) > 1e-9 if k == "beta" else arch.get(k) != v)]
    if not wrong:
        return None
    return ("spandrel's ESRGAN fixes the RRDB trunk, no BatchNorm, gc 32 and beta 0.2; this "
            f"generator has {', '.join(wrong)} (use --onnx instead)")


def save_spandrel(path: str | Path, model: nn.Module) -> Path:
    """Write ``model``'s weights as a plain state dict in BasicSR's RRDBNet names
    (``.safetensors`` or a torch file by the name). Raises ExportError when spandrel's ESRGAN
    cannot represent the network (``spandrel_problem``)."""
    problem = spandrel_problem(model.arch)
    if problem:
        raise ExportError(problem)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_checkpoint(path, state)
    return Path(path)


def check_spandrel(model: nn.Module, path: str | Path, size: tuple[int, int, int] = CHECK_SIZE,
                   tolerance: float = TOLERANCE) -> float:
    """Load ``path`` with spandrel's ModelLoader and compare it with ``model`` on a random
    input; returns max |difference|. Raises ExportError when spandrel does not take it for an
    ESRGAN of the same scale or its output differs by more than ``tolerance``."""
    import spandrel

    try:
        descriptor = spandrel.ModelLoader().load_from_file(str(path))
    except Exception as exc:  # spandrel raises several kinds; each means "not readable"
        raise ExportError(f"spandrel cannot load {path}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    arch_id, scale = descriptor.architecture.id, descriptor.scale
    if arch_id != "ESRGAN" or scale != model.scale:
        raise ExportError(f"spandrel reads {path} as {arch_id} x{scale}, not ESRGAN "
                          f"x{model.scale}")
    model = model.float().cpu().eval()
    x = _random_input(model, size, seed=2)
    with torch.no_grad():
        reference = model(x)
        out = descriptor.model.float().cpu().eval()(x)
    diff, scale_ = _max_difference(reference, out)
    if not diff <= tolerance * scale_:
        raise ExportError(f"spandrel's network differs from this one by up to {diff:.3g} "
                          f"(tolerance {tolerance * scale_:.3g})")
    return diff


def _spandrel_installed() -> bool:
    try:
        import spandrel  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 for any error)."""
    parser = argparse.ArgumentParser(
        prog="python -m esrgan.export",
        description="Export a generator to ONNX and/or a spandrel (chaiNNer) state dict, "
                    "each checked numerically against PyTorch.")
    parser.add_argument("weights", type=Path,
                        help="generator checkpoint: .pth or .safetensors, any layout "
                             "esrgan.weights reads")
    parser.add_argument("--params", choices=PARAMS_CHOICES, default="auto", help=PARAMS_HELP)
    parser.add_argument("--onnx", type=Path, help="write an ONNX model here (fp32, dynamic "
                                                  "batch, height and width)")
    parser.add_argument("--opset", type=int, default=ONNX_OPSET,
                        help=f"ONNX opset (default {ONNX_OPSET})")
    parser.add_argument("--spandrel", type=Path,
                        help="write a plain state dict for spandrel/chaiNNer here (.pth or "
                             ".safetensors)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help=f"largest difference from PyTorch allowed, relative to "
                             f"max(1, max |output|) (default {TOLERANCE:g})")
    args = parser.parse_args(argv)
    if args.onnx is None and args.spandrel is None:
        parser.error("nothing to do: give --onnx OUT.onnx and/or --spandrel OUT.pth")

    try:
        if not args.tolerance > 0:
            raise ValueError(f"--tolerance must be > 0, got {args.tolerance}")
        outputs = [p for p in (args.onnx, args.spandrel) if p is not None]
        if len({p.resolve() for p in outputs}) < len(outputs):
            raise ValueError("--onnx and --spandrel name the same file")
        for path in outputs:
            if path.resolve() == args.weights.resolve():
                raise ValueError(f"output {path} is the input weights file")
        model = load_generator(args.weights, params=args.params).float().eval()
        if args.spandrel is not None:  # refused before any work, like an unwritable output
            problem = spandrel_problem(model.arch)
            if problem:
                raise ExportError(f"--spandrel: {problem}")
        for path in outputs:
            check_output_path(path)
        if args.onnx is not None:
            data = onnx_bytes(model, args.opset)
            diff = check_onnx(model, data, tolerance=args.tolerance)
            atomic_write(args.onnx, data, what="the ONNX model")
            print(f"wrote {args.onnx} (opset {args.opset}); onnxruntime vs PyTorch on a "
                  f"{'x'.join(map(str, CHECK_SIZE))} (batch x H x W) input: max |diff| "
                  f"{diff:.2e}")
        if args.spandrel is not None:
            save_spandrel(args.spandrel, model)
            if _spandrel_installed():
                try:
                    diff = check_spandrel(model, args.spandrel, tolerance=args.tolerance)
                except ExportError:
                    args.spandrel.unlink(missing_ok=True)  # a file that does not reproduce G
                    raise
                print(f"wrote {args.spandrel}; spandrel loads it as ESRGAN x{model.scale}, "
                      f"max |diff| from PyTorch {diff:.2e}")
            else:
                print(f"wrote {args.spandrel}; spandrel is not installed, so it was not loaded "
                      "back (pip install spandrel)")
    except ImportError as exc:
        print(f"error: {exc.name or exc} is not installed: pip install -e '.[export]' (onnx, "
              "onnxruntime, spandrel)", file=sys.stderr)
        return 2
    except (ValueError, OSError, RuntimeError) as exc:
        # CheckpointError/ExportError/OutputError are ValueErrors or OSErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
