"""Checkpoints: safe save/load, the published generator key layouts, network interpolation.

Every file is read with ``torch.load(..., weights_only=True)``: a file that needs to run
Python code to load (a pickle with ``__reduce__`` tricks, a pickled class) is refused with
``CheckpointError``, never unpickled. ``.safetensors`` files (which hold only tensors and
text) load too; the format is recognised from the file's content, not its name.

Our generator files are BasicSR-compatible: ``{'params': state_dict, 'arch': build args}``.
``load_generator_state`` also reads the three published layouts (the paper's released
models and their successors) and converts them to our (BasicSR) key names:

- BasicSR ``{'params': ..., 'params_ema': ...}``: ``params`` are the raw weights of the last
  iteration, ``params_ema`` their exponential moving average (kept when training ran with
  ``ema_decay``). Tools differ: BasicSR's ``inference_esrgan.py`` loads ``params``,
  Real-ESRGAN's inference prefers ``params_ema``, and BasicSR validates with the EMA network
  when it keeps one. The ``params`` argument chooses: ``'auto'`` (default) takes
  ``params_ema`` when present, else ``params`` (what BasicSR validated and Real-ESRGAN runs);
  ``'params'`` or ``'params_ema'`` insist on that entry.
- xinntao/ESRGAN (2019+): ``RRDB_trunk.{i}.RDB{k}.conv{j}``, ``trunk_conv``, ``upconv1/2``,
  ``HRconv``.
- pre-2019 ESRGAN (``RRDB_ESRGAN_x4.pth``): ``model.0``, ``model.1.sub.{i}.RDB{k}.conv{j}.0``,
  ``model.1.sub.{nb}`` (trunk conv), ``model.3``, ``model.6``, ``model.8``, ``model.10``.

A plain state dict in our key names (or with DataParallel's ``module.`` prefix) loads too.

Safetensors layout. A safetensors file is one flat name -> tensor table plus text metadata,
so a checkpoint ``{'params': {...}, 'params_ema': {...}, 'arch': {...}}`` is stored as
tensors ``params.<key>`` and ``params_ema.<key>``, with ``arch`` (and any other plain value)
as JSON in the metadata and ``esrgan.layout`` (JSON) recording which entries were tensor
groups and which JSON values. Reading restores the nested dict. A file without
``esrgan.layout`` (written by other tools) is read as a flat state dict, except that keys all
prefixed ``params.`` / ``params_ema.`` are grouped back into BasicSR's entries; its metadata
is ignored (the architecture is inferred from the keys).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from esrgan.archs.rrdbnet import Generator
from esrgan.files import atomic_write

ARCH_KEYS: tuple[str, ...] = (
    "trunk", "bn", "beta", "init_scale", "nf", "nb", "gc", "scale", "in_ch", "out_ch",
)

StateDict = dict[str, Tensor]

SAFETENSORS_SUFFIX = ".safetensors"
# Which weights of a BasicSR file to use (see the module docstring).
PARAMS_CHOICES: tuple[str, ...] = ("auto", "params", "params_ema")
PARAMS_HELP = ("which weights of a BasicSR file with params and params_ema: auto (default) "
               "takes params_ema when present, else params, as Real-ESRGAN's inference does "
               "and as BasicSR validates; params = the raw last-iteration weights (BasicSR's "
               "inference_esrgan.py)")
"""The ``--params`` help of every command that reads generator weights."""
_LAYOUT_KEY = "esrgan.layout"
_BASICSR_GROUPS = ("params", "params_ema")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unsafe, unreadable, or not matching the network."""


class WeightsNotFound(CheckpointError):
    """A weights file that is not where it should be."""


# --- files -------------------------------------------------------------------------------


def save_checkpoint(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` to ``path`` atomically (``esrgan.files.atomic_write``); creates folders.

    A name ending in ``.safetensors`` writes a safetensors file (layout in the module
    docstring: top-level tensors, dicts of tensors and JSON values); anything else is
    ``torch.save``. ``obj`` should hold only tensors and plain Python values, or it will not
    load back with ``load_checkpoint``. A full disk raises ``esrgan.files.NoSpaceError``.
    """
    path = Path(path)
    if path.name.endswith(SAFETENSORS_SUFFIX):
        atomic_write(path, _to_safetensors(obj, path), what="the checkpoint")
    else:
        atomic_write(path, lambda f: torch.save(obj, f), what="the checkpoint")


def _to_safetensors(obj: Any, path: Path) -> bytes:
    from safetensors.torch import save

    if not isinstance(obj, dict):
        raise TypeError(f"{path}: a safetensors checkpoint holds a dict, not "
                        f"{type(obj).__name__}")
    tensors: dict[str, Tensor] = {}
    metadata: dict[str, str] = {"format": "pt"}
    layout: dict[str, list[str]] = {"groups": [], "values": []}

    def add(key: str, tensor: Tensor) -> None:
        if key in tensors:
            raise ValueError(f"{path}: two tensors would be stored as {key!r}")
        tensors[key] = tensor

    for name, value in obj.items():
        if not isinstance(name, str):
            raise TypeError(f"{path}: entry names must be strings, got {name!r}")
        if isinstance(value, Tensor):
            add(name, value)
        elif isinstance(value, dict) and value and all(isinstance(v, Tensor)
                                                       for v in value.values()):
            layout["groups"].append(name)
            for key, tensor in value.items():
                add(f"{name}.{key}", tensor)
        else:
            if name in ("format", _LAYOUT_KEY):
                raise ValueError(f"{path}: entry name {name!r} is reserved in safetensors "
                                 f"metadata")
            try:
                metadata[name] = json.dumps(value)
            except TypeError as exc:
                raise TypeError(f"{path}: entry {name!r} cannot be stored in a safetensors "
                                f"file ({exc})") from None
            layout["values"].append(name)
    metadata[_LAYOUT_KEY] = json.dumps(layout)
    # safetensors refuses views and tensors that share memory: store each one on its own.
    seen: set[tuple[int, int]] = set()
    for key, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        ident = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if ident in seen or not tensor.is_contiguous() \
                or tensor.untyped_storage().nbytes() != tensor.nbytes:
            tensor = tensor.contiguous().clone()
        seen.add(ident)
        tensors[key] = tensor
    return save(tensors, metadata)


def _file_kind(path: str | os.PathLike) -> str | None:
    """'safetensors', 'torch' (zip or legacy pickle) or None, from the file's first bytes."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") \
            <= 100_000_000:
        return "safetensors"  # 8-byte header length, then the JSON header
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return "torch"  # torch.save's zip file, or the legacy format (a pickle stream)
    return None


def is_safetensors_file(path: str | os.PathLike) -> bool:
    """True if the file starts like a safetensors file (header length, then a JSON object).

    Decided by content, so a ``.pth`` that is safetensors (or the reverse) is read right.
    """
    try:
        return _file_kind(path) == "safetensors"
    except OSError:
        return False


def _load_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            flat = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # SafetensorError, OSError: a truncated or damaged file
        reason = _first_sentence(str(exc)) or type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: corrupt safetensors file ({reason})") from None
    obj: dict[str, Any] = {}
    if _LAYOUT_KEY in metadata:  # written here: restore exactly what was saved
        try:
            layout = json.loads(metadata[_LAYOUT_KEY])
            groups = list(layout["groups"])
            for name in layout["values"]:
                obj[name] = json.loads(metadata[name])
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: corrupt safetensors "
                                  f"metadata ({type(exc).__name__}: {exc})") from None
    else:  # another tool's file: flat, or BasicSR's two entries flattened with prefixes
        prefixes = {key.split(".", 1)[0] for key in flat}
        basicsr = bool(flat) and all("." in k for k in flat) and prefixes <= set(_BASICSR_GROUPS)
        groups = sorted(prefixes) if basicsr else []
        # Its metadata is its own (free text): not read as our build arguments.
    for key, tensor in flat.items():
        group, _, rest = key.partition(".")
        if group in groups and rest:
            obj.setdefault(group, {})[rest] = tensor
        else:
            obj[key] = tensor
    return obj


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Load a checkpoint onto the CPU: a torch file with ``weights_only=True`` (tensors and
    plain values) or a safetensors file (recognised by its content; see the module docstring).

    Raises ``WeightsNotFound`` for a missing file and ``CheckpointError`` for a file that would
    execute code when unpickled ("refusing to load ..."), a corrupt safetensors file, or a
    file that is neither format.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsNotFound(f"checkpoint file not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    try:
        kind = _file_kind(path)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from None
    if kind == "safetensors":
        return _load_safetensors(path)
    if kind is None:
        raise CheckpointError(f"cannot read checkpoint {path}: not a PyTorch or safetensors "
                              f"weights file (or corrupt)")
    try:
        with warnings.catch_warnings():
            # Harmless notice for pickles written with protocol > 2; the load is still safe.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            # A file object, not the path: torch.load would pick its reader by the name.
            with open(path, "rb") as f:
                return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        if "Weights only load failed" in text:
            raise CheckpointError(
                f"refusing to load {path}: not a plain weights file ({_unsafe_reason(text)})"
            ) from None
        reason = _first_sentence(text) or type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a PyTorch weights file or corrupt ({reason})"
        ) from None


def _first_sentence(text: str, limit: int = 120) -> str:
    """The first line of an error text, cut after its first sentence when longer than limit."""
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    if len(line) > limit and ". " in line[:limit]:
        line = line[:line.index(". ") + 1]
    return line[:limit]


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


def save_generator(path: str | os.PathLike, model: Generator,
                   ema: nn.Module | None = None, info: dict[str, Any] | None = None) -> None:
    """Write ``{'params': state_dict, 'arch': model.arch}`` (BasicSR-compatible) to ``path``;
    with ``ema`` (a moving average of ``model``'s weights) also ``'params_ema'``, as BasicSR
    ships its models; ``info`` (plain values, e.g. the step) is recorded beside them.

    A ``.safetensors`` name writes a safetensors file (``params.<key>`` tensors, ``arch`` as
    JSON metadata); any other name a torch file.
    """
    if not hasattr(model, "arch"):
        raise TypeError(f"save_generator: {type(model).__name__} has no .arch (not a Generator)")
    obj: dict[str, Any] = {"params": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if ema is not None:
        obj["params_ema"] = {k: v.detach().cpu() for k, v in ema.state_dict().items()}
    obj["arch"] = dict(model.arch)
    obj.update(info or {})
    save_checkpoint(path, obj)


def load_generator_state(path_or_dict: str | os.PathLike | dict, *,
                         params: str = "auto") -> StateDict:
    """A generator state dict in our (BasicSR) key names, from a file or an already loaded dict.

    Accepts our files (torch or safetensors), BasicSR ``params``/``params_ema`` files, xinntao
    and pre-2019 ESRGAN layouts (detected from the keys, see the module docstring). ``params``
    ('auto', 'params', 'params_ema') picks the weights of a BasicSR file: 'auto' takes
    ``params_ema`` when present, else ``params``. Raises ``CheckpointError``.
    """
    return _read_generator(path_or_dict, params)[0]


SHAPE_KEYS = ("trunk", "bn", "nf", "nb", "gc", "scale", "in_ch", "out_ch")
"""The build arguments that the tensors themselves determine (``infer_arch``)."""


def read_generator_checkpoint(path_or_dict: str | os.PathLike | dict, *,
                              params: str = "auto",
                              source: str | None = None) -> tuple[StateDict, dict]:
    """(state dict in our key names, arch dict) of a generator checkpoint.

    The arch is the file's ``'arch'`` entry when it has one, else ``infer_arch`` of the keys.
    ``params`` as in ``load_generator_state``; ``source`` names a loaded dict in messages
    (default: the path, or "state dict").
    """
    state, arch, source = _read_generator(path_or_dict, params, source)
    inferred = infer_arch(state, source)
    if arch is None:
        return state, inferred
    unknown = sorted(set(arch) - set(ARCH_KEYS))
    if unknown:
        raise CheckpointError(f"{source}: unknown entries in 'arch': {', '.join(unknown)}")
    # The tensors decide the shape: a recorded arch that claims another one is refused before
    # anything is built (a lying nb=1000000 would otherwise allocate gigabytes first).
    shaped = [k for k in SHAPE_KEYS if k != "gc" or inferred["trunk"] == "rrdb"]
    for key in (k for k in shaped if k in arch and arch[k] != inferred[k]):
        raise CheckpointError(f"{source}: its 'arch' entry says {key}={arch[key]!r} but its "
                              f"tensors hold {key}={inferred[key]!r}")
    return state, {**inferred, **arch}


def _pick_params(obj: dict, source: str, params: str) -> dict:
    """The state dict of a checkpoint: its ``params_ema``/``params`` entry or ``obj`` itself."""
    if params not in PARAMS_CHOICES:
        raise ValueError(f"params must be one of {', '.join(PARAMS_CHOICES)}, got {params!r}")
    present = [k for k in _BASICSR_GROUPS if isinstance(obj.get(k), dict)]
    if params == "auto":
        for key in ("params_ema", "params"):
            if key in present:
                return obj[key]
        return obj
    if params not in present:
        has = f"it has only {present[0]}" if present else "it is a plain state dict"
        raise CheckpointError(f"{source}: no '{params}' weights in this checkpoint ({has})")
    return obj[params]


def _read_generator(path_or_dict: str | os.PathLike | dict, params: str = "auto",
                    source: str | None = None) -> tuple[StateDict, dict | None, str]:
    if isinstance(path_or_dict, dict):
        obj, source = path_or_dict, source or "state dict"
    else:
        obj, source = load_checkpoint(path_or_dict), source or str(path_or_dict)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict of weights, got {type(obj).__name__}")
    arch = obj.get("arch")
    if arch is not None and not isinstance(arch, dict):
        raise CheckpointError(f"{source}: 'arch' entry is {type(arch).__name__}, not a dict")
    state = dict(_pick_params(obj, source, params))
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


def load_generator(path: str | os.PathLike | dict, *, params: str = "auto",
                   source: str | None = None, **overrides: Any) -> Generator:
    """Build a ``Generator`` from a checkpoint file (or its loaded dict) and load its weights
    (any layout).

    The architecture comes from the file's ``'arch'`` entry, else ``infer_arch``;
    ``overrides`` (build arguments, e.g. ``beta=0.2``) replace single entries. ``params``
    picks the weights of a BasicSR file (see ``load_generator_state``). ``source`` names a
    loaded dict in messages (default: the path). The keys, their shapes and the network's size
    are checked before anything is built (``check_fits``); a mismatch is a ``CheckpointError``.
    """
    unknown = sorted(set(overrides) - set(ARCH_KEYS))
    if unknown:
        raise ValueError(f"load_generator: unknown arguments {', '.join(unknown)} "
                         f"(choose from {', '.join(ARCH_KEYS)})")
    source = source or str(path)
    state, arch = read_generator_checkpoint(path, params=params, source=source)
    arch = {**arch, **overrides}
    check_fits(state, arch, source)  # before building: the file decides how much is allocated
    try:
        model = Generator(**arch)
    except ValueError as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    load_into(model, state, source)
    return model


MAX_GENERATOR_VALUES = 1_000_000_000
"""The most numbers (parameters and buffers) a generator is built with: 4 GB in float32,
60 times the paper's network (16.7 million); a file implying more is refused unbuilt."""


def check_fits(state: StateDict, arch: dict, source: str) -> None:
    """Check that ``state`` holds exactly the keys and shapes of ``Generator(**arch)``, and
    that this network is at most :data:`MAX_GENERATOR_VALUES` numbers, without building it.

    Only a one-block skeleton on the meta device (no memory) is made, so a file whose keys
    name 10,000 wide blocks is refused at once instead of allocating hundreds of GB. Raises
    ``CheckpointError`` with one line naming ``source``: an invalid build argument, a network
    over the size bound, or the first missing, unexpected or mis-shaped key.
    """
    nb = arch.get("nb")
    if not isinstance(nb, int) or isinstance(nb, bool) or nb < 1:  # as Generator says it
        raise CheckpointError(f"{source}: generator: nb must be an integer >= 1, got {nb!r}")
    try:
        with torch.device("meta"):
            skeleton = Generator(**{**arch, "nb": 1})
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{source}: {exc}") from None
    shapes = {key: tuple(t.shape) for key, t in skeleton.state_dict().items()}
    block = {key[len("body.0."):]: s for key, s in shapes.items() if key.startswith("body.0.")}
    frame = {key: s for key, s in shapes.items() if not key.startswith("body.")}
    values = sum(math.prod(s) for s in frame.values()) \
        + nb * sum(math.prod(s) for s in block.values())
    if values > MAX_GENERATOR_VALUES:
        widths = f"nf={arch['nf']}" + (f", gc={arch['gc']}" if arch["trunk"] == "rrdb" else "")
        raise CheckpointError(
            f"{source}: its weights describe a generator of {nb} trunk blocks ({widths}) with "
            f"{values:,} parameters ({values * 4 / 1e9:,.0f} GB), more than the "
            f"{MAX_GENERATOR_VALUES:,} this framework builds: refused")
    first_block = next(key for key in shapes if key.startswith("body.0."))

    def in_order() -> Iterator[tuple[str, tuple[int, ...]]]:
        """The model's keys and shapes in its own order, the trunk's blocks expanded."""
        for key, shape in shapes.items():
            if not key.startswith("body."):
                yield key, shape
            elif key == first_block:
                for i in range(nb):
                    for rest, s in block.items():
                        yield f"body.{i}.{rest}", s

    # As load_into, in the same order. Each key looked at is in ``state`` or ends the loop,
    # so it stops within len(state) + 1 keys whatever the architecture.
    for key, shape in in_order():
        if key not in state:
            raise CheckpointError(
                f"{source}: missing key {key!r} (the model expects shape {shape})")
        if tuple(state[key].shape) != shape:
            raise CheckpointError(
                f"{source}: key {key!r} has shape {tuple(state[key].shape)} in the checkpoint "
                f"but {shape} in the model")
    for key, tensor in state.items():
        match = re.fullmatch(r"body\.(\d+)\.(.+)", key)
        known = (match.group(2) in block and int(match.group(1)) < nb) if match \
            else key in frame
        if not known:
            raise CheckpointError(
                f"{source}: unexpected key {key!r} (shape {tuple(tensor.shape)}) "
                f"that the model does not have")


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
    """theta = (1 - alpha) * a + alpha * b for every float tensor (the paper, section 3.4).

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
