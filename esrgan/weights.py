"""Checkpoints: safe save/load, the published generator key layouts, network interpolation.

Every file is read with ``torch.load(..., weights_only=True)``: a file that needs to run
Python code to load (a pickle with ``__reduce__`` tricks, a pickled class) is refused with
``CheckpointError``, never unpickled.

Our generator files are BasicSR-compatible: ``{'params': state_dict, 'arch': build args}``.
``load_generator_state`` also reads the three published layouts (PAPER.md section 7) and
converts them to our (BasicSR) key names:

- BasicSR ``{'params': ..., 'params_ema': ...}``: ``params_ema`` is taken when present. The
  EMA weights are the ones BasicSR validates and releases as the final model (its own
  inference scripts prefer them); ``params`` are the raw last-iteration weights.
- xinntao/ESRGAN (2019+): ``RRDB_trunk.{i}.RDB{k}.conv{j}``, ``trunk_conv``, ``upconv1/2``,
  ``HRconv``.
- pre-2019 ESRGAN (``RRDB_ESRGAN_x4.pth``): ``model.0``, ``model.1.sub.{i}.RDB{k}.conv{j}.0``,
  ``model.1.sub.{nb}`` (trunk conv), ``model.3``, ``model.6``, ``model.8``, ``model.10``.

A plain state dict in our key names (or with DataParallel's ``module.`` prefix) loads too.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from esrgan.archs.rrdbnet import Generator

ARCH_KEYS: tuple[str, ...] = (
    "trunk", "bn", "beta", "init_scale", "nf", "nb", "gc", "scale", "in_ch", "out_ch",
)

StateDict = dict[str, Tensor]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unsafe, unreadable, or not matching the network."""


class WeightsNotFound(CheckpointError):
    """A weights file that is not where it should be."""


# --- files -------------------------------------------------------------------------------


def save_checkpoint(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically (temp file + rename); creates folders.

    ``obj`` should hold only tensors and plain Python values, or it will not load back with
    ``load_checkpoint``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Load a checkpoint onto the CPU with ``weights_only=True`` (tensors and plain values).

    Raises ``WeightsNotFound`` for a missing file and ``CheckpointError`` for a file that would
    execute code when unpickled ("refusing to load ...") or is not a torch file at all.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsNotFound(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    try:
        with warnings.catch_warnings():
            # Harmless notice for pickles written with protocol > 2; the load is still safe.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        if "Weights only load failed" in text:
            raise CheckpointError(
                f"refusing to load {path}: not a plain weights file ({_unsafe_reason(text)})"
            ) from None
        reason = text.strip().splitlines()[0][:120] if text.strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a PyTorch weights file or corrupt ({reason})"
        ) from None


def _unsafe_reason(text: str) -> str:
    """One short phrase out of torch's multi-paragraph weights_only error."""
    match = re.search(r"GLOBAL ([\w.]+)", text)
    if match:
        return f"it references the Python object {match.group(1)}"
    match = re.search(r"Unsupported operand \d+", text)
    if match:
        return f"it uses pickle instructions that weights never need: {match.group(0)}"
    return "it holds Python objects other than tensors and plain values"


# --- generator checkpoints ----------------------------------------------------------------


def save_generator(path: str | os.PathLike, model: Generator) -> None:
    """Write ``{'params': state_dict, 'arch': model.arch}`` (BasicSR-compatible) to ``path``."""
    if not hasattr(model, "arch"):
        raise TypeError(f"save_generator: {type(model).__name__} has no .arch (not a Generator)")
    params = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(path, {"params": params, "arch": dict(model.arch)})


def load_generator_state(path_or_dict: str | os.PathLike | dict) -> StateDict:
    """A generator state dict in our (BasicSR) key names, from a file or an already loaded dict.

    Accepts our files, BasicSR ``params``/``params_ema`` files, xinntao and pre-2019 ESRGAN
    layouts (detected from the keys, see the module docstring). Raises ``CheckpointError``.
    """
    return _read_generator(path_or_dict)[0]


def read_generator_checkpoint(path_or_dict: str | os.PathLike | dict) -> tuple[StateDict, dict]:
    """(state dict in our key names, arch dict) of a generator checkpoint.

    The arch is the file's ``'arch'`` entry when it has one, else ``infer_arch`` of the keys.
    """
    state, arch, source = _read_generator(path_or_dict)
    inferred = infer_arch(state, source)
    if arch is None:
        return state, inferred
    unknown = sorted(set(arch) - set(ARCH_KEYS))
    if unknown:
        raise CheckpointError(f"{source}: unknown entries in 'arch': {', '.join(unknown)}")
    return state, {**inferred, **arch}


def _read_generator(path_or_dict: str | os.PathLike | dict) -> tuple[StateDict, dict | None, str]:
    if isinstance(path_or_dict, dict):
        obj, source = path_or_dict, "state dict"
    else:
        obj, source = load_checkpoint(path_or_dict), str(path_or_dict)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict of weights, got {type(obj).__name__}")
    arch = obj.get("arch")
    if arch is not None and not isinstance(arch, dict):
        raise CheckpointError(f"{source}: 'arch' entry is {type(arch).__name__}, not a dict")
    if isinstance(obj.get("params_ema"), dict):
        state = obj["params_ema"]
    elif isinstance(obj.get("params"), dict):
        state = obj["params"]
    else:
        state = obj
    state = dict(state)
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(
                f"{source}: entry {key!r} is {type(value).__name__}, not a tensor "
                f"(not a generator state dict)")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return _to_our_keys(state, source), arch, source


def _to_our_keys(state: StateDict, source: str) -> StateDict:
    keys = list(state)
    if any(k.startswith("model.") for k in keys):
        return _rename(state, _pre2019_rules(state, source), source, "pre-2019 ESRGAN")
    if any(k.startswith(("RRDB_trunk.", "trunk_conv.")) for k in keys):
        return _rename(state, _XINNTAO_RULES, source, "xinntao/ESRGAN")
    if "conv_first.weight" in state:
        return state
    sample = ", ".join(keys[:3]) or "no keys"
    raise CheckpointError(f"{source}: not an ESRGAN generator state dict (keys: {sample}, ...)")


# (regex on the published key, our key template); the first matching rule wins.
_XINNTAO_RULES: list[tuple[str, str]] = [
    (r"RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)", r"body.\1.rdb\2.conv\3.\4"),
    (r"trunk_conv\.(weight|bias)", r"conv_body.\1"),
    (r"upconv(\d)\.(weight|bias)", r"conv_up\1.\2"),
    (r"HRconv\.(weight|bias)", r"conv_hr.\1"),
    (r"(conv_first|conv_last)\.(weight|bias)", r"\1.\2"),
]


def _pre2019_rules(state: StateDict, source: str) -> list[tuple[str, str]]:
    """Rules for ``model.N`` keys; the indices after the trunk depend on the upscaling stages.

    The old network was one nn.Sequential: 0 conv, 1 trunk shortcut, then per x2 stage
    (upsample, conv, act), then HR conv, act, last conv. So the last conv is 4 + 3 * stages.
    """
    top = [int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.", k))]
    stages, rest = divmod(max(top) - 4, 3)
    if rest or stages not in (1, 2):
        raise CheckpointError(
            f"{source}: pre-2019 ESRGAN layout with last index model.{max(top)} "
            f"(expected model.7 for x2 or model.10 for x4)")
    rules = [
        (r"model\.0\.(weight|bias)", r"conv_first.\1"),
        (r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)(?:\.0)?\.(weight|bias)",
         r"body.\1.rdb\2.conv\3.\4"),
        (r"model\.1\.sub\.\d+(?:\.0)?\.(weight|bias)", r"conv_body.\1"),
    ]
    for k in range(stages):
        rules.append((rf"model\.{3 + 3 * k}\.(weight|bias)", rf"conv_up{k + 1}.\1"))
    rules.append((rf"model\.{2 + 3 * stages}\.(weight|bias)", r"conv_hr.\1"))
    rules.append((rf"model\.{4 + 3 * stages}\.(weight|bias)", r"conv_last.\1"))
    return rules


def _rename(state: StateDict, rules: list[tuple[str, str]], source: str, layout: str) -> StateDict:
    out: StateDict = {}
    for key, value in state.items():
        for pattern, template in rules:
            match = re.fullmatch(pattern, key)
            if match:
                out[match.expand(template)] = value
                break
        else:
            raise CheckpointError(f"{source}: unexpected key {key!r} in a {layout} checkpoint")
    return out


def infer_arch(state: StateDict, source: str = "state dict") -> dict:
    """Build arguments of the generator a state dict (our key names) belongs to.

    nf and in_ch come from conv_first, out_ch from conv_last, nb from the number of
    ``body.{i}`` blocks, gc from ``rdb1.conv1``, bn from ``bn`` keys in the trunk, scale from
    the number of ``conv_up`` convs. beta and init_scale are not stored in weights: beta is
    taken as the published value for the trunk (0.2 for RRDB, as every released ESRGAN
    model; 1.0 for ResBlock, as SRGAN/MSRResNet); override it when the file was trained
    otherwise. init_scale only matters before training.
    """
    if "conv_first.weight" not in state or "conv_last.weight" not in state:
        raise CheckpointError(f"{source}: no conv_first/conv_last weights (not a generator)")
    nf, in_ch = state["conv_first.weight"].shape[:2]
    out_ch = state["conv_last.weight"].shape[0]
    if in_ch in (4 * out_ch, 16 * out_ch):
        raise CheckpointError(
            f"{source}: conv_first takes {in_ch} channels: a BasicSR pixel-unshuffle RRDBNet "
            f"(x2/x1 variant), which this framework does not implement")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"body\.(\d+)\.", k))}
    if not blocks or blocks != set(range(len(blocks))):
        raise CheckpointError(f"{source}: trunk blocks body.N missing or not numbered 0..N-1")
    if "body.0.rdb1.conv1.weight" in state:
        trunk, gc = "rrdb", int(state["body.0.rdb1.conv1.weight"].shape[0])
    elif "body.0.conv1.weight" in state:
        trunk, gc = "resblock", 32
    else:
        raise CheckpointError(f"{source}: trunk block body.0 is neither an RRDB nor a ResBlock")
    return {
        "trunk": trunk,
        "bn": any(re.match(r"body\.\d+\.(rdb\d\.)?bn\d", k) for k in state),
        "beta": 0.2 if trunk == "rrdb" else 1.0,
        "init_scale": 0.1 if trunk == "rrdb" else 1.0,
        "nf": int(nf), "nb": len(blocks), "gc": gc,
        "scale": 4 if "conv_up2.weight" in state else 2,
        "in_ch": int(in_ch), "out_ch": int(out_ch),
    }


def load_generator(path: str | os.PathLike, **overrides: Any) -> Generator:
    """Build a ``Generator`` from a checkpoint file and load its weights (any layout).

    The architecture comes from the file's ``'arch'`` entry, else ``infer_arch``;
    ``overrides`` (build arguments, e.g. ``beta=0.2``) replace single entries.
    """
    unknown = sorted(set(overrides) - set(ARCH_KEYS))
    if unknown:
        raise ValueError(f"load_generator: unknown arguments {', '.join(unknown)} "
                         f"(choose from {', '.join(ARCH_KEYS)})")
    state, arch = read_generator_checkpoint(path)
    arch = {**arch, **overrides}
    try:
        model = Generator(**arch)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    load_into(model, state, str(path))
    return model


def load_into(model: nn.Module, state: StateDict, source: str) -> None:
    """``model.load_state_dict(state)`` after checking every key and shape first.

    Raises ``CheckpointError`` with one line naming ``source`` and the first missing,
    unexpected or mis-shaped key (with both shapes).
    """
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise CheckpointError(
                f"{source}: missing key {key!r} (the model expects shape {tuple(tensor.shape)})")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: key {key!r} has shape {tuple(state[key].shape)} in the checkpoint "
                f"but {tuple(tensor.shape)} in the model")
    for key in state:
        if key not in expected:
            raise CheckpointError(
                f"{source}: unexpected key {key!r} (shape {tuple(state[key].shape)}) "
                f"that the model does not have")
    model.load_state_dict(state, strict=True)


# --- network interpolation ----------------------------------------------------------------


def interpolate_state(a: StateDict, b: StateDict, alpha: float) -> StateDict:
    """theta = (1 - alpha) * a + alpha * b for every float tensor (PAPER.md section 4).

    alpha = 0 gives ``a`` and alpha = 1 gives ``b`` exactly. Non-float tensors (BatchNorm's
    ``num_batches_tracked``) are copied from ``a``. Raises ValueError for alpha outside
    [0, 1] and ``CheckpointError`` when the two state dicts differ in keys or shapes.
    """
    if not (isinstance(alpha, numbers.Real) and math.isfinite(alpha) and 0 <= alpha <= 1):
        raise ValueError(f"interpolation alpha must be in [0, 1], got {alpha!r}")
    for key in a:
        if key not in b:
            raise CheckpointError(
                f"cannot interpolate: different architectures (key {key!r} only in the first)")
        if a[key].shape != b[key].shape:
            raise CheckpointError(
                f"cannot interpolate: different architectures (key {key!r} has shape "
                f"{tuple(a[key].shape)} vs {tuple(b[key].shape)})")
    for key in b:
        if key not in a:
            raise CheckpointError(
                f"cannot interpolate: different architectures (key {key!r} only in the second)")
    out: StateDict = {}
    for key, ta in a.items():
        if ta.is_floating_point():
            out[key] = (1 - alpha) * ta + alpha * b[key].to(ta.dtype)
        else:
            out[key] = ta.clone()
    return out
