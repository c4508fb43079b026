"""Official MIMO-UNet checkpoints <-> Keras weights (mimo_unet.md Sec. 11-12).

The official checkpoints (``MIMO-UNet.pkl``, ``MIMO-UNetPlus.pkl``) are ``torch.save`` pickles of
``{"model": state_dict}``. This module maps every state-dict key of the official ``MIMOUNet`` /
``MIMOUNetPlus`` onto a :class:`models.mimo_unet.MIMOUNet`, strictly: every key consumed once, every
shape checked. NumPy only; reading a ``.pkl`` needs PyTorch (optional, ``requirements-torch.txt``),
an ``.npz`` of the state dict (the layout of ``shared/fixtures/mimo_unet``) does not.

Layouts: ``Conv2d`` weight (out, in, kh, kw) and ``ConvTranspose2d`` weight (in, out, kh, kw) both
become Keras kernels with ``transpose(2, 3, 1, 0)``, giving (kh, kw, in, out) for ``Conv2D`` and
(kh, kw, out, in) for ``Conv2DTranspose``; no spatial flip. Biases are copied unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import numpy as np

TORCH_TO_KERAS = (2, 3, 1, 0)
KERAS_TO_TORCH = (3, 2, 0, 1)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


def _conv_keys(prefix: str, layer) -> Iterator[tuple[str, object]]:
    yield f"{prefix}.weight", layer.kernel
    yield f"{prefix}.bias", layer.bias


def _res_group_keys(prefix: str, group) -> Iterator[tuple[str, object]]:
    for i, block in enumerate(group.blocks):
        yield from _conv_keys(f"{prefix}.layers.{i}.main.0.main.0", block.conv1)
        yield from _conv_keys(f"{prefix}.layers.{i}.main.1.main.0", block.conv2)


def _scm_keys(prefix: str, scm) -> Iterator[tuple[str, object]]:
    for j, layer in enumerate(scm.main):
        yield from _conv_keys(f"{prefix}.main.{j}.main.0", layer)
    yield from _conv_keys(f"{prefix}.conv.main.0", scm.conv)


def state_dict_variables(model) -> dict[str, object]:
    """Official state-dict key -> Keras variable, in the official ``state_dict()`` order."""
    if not model.built:
        model.build((None, None, None, 3))
    items = []
    for e, group in enumerate(model.encoders):
        items += _res_group_keys(f"Encoder.{e}", group)
    for n, layer in enumerate(model.feat_extract):
        items += _conv_keys(f"feat_extract.{n}.main.0", getattr(layer, "conv", None) or layer)
    for d, group in enumerate(model.decoders):
        items += _res_group_keys(f"Decoder.{d}", group)
    for n, layer in enumerate(model.convs):
        items += _conv_keys(f"Convs.{n}.main.0", layer)
    for n, layer in enumerate(model.convs_out):
        items += _conv_keys(f"ConvsOut.{n}.main.0", layer)
    for k, aff in enumerate(model.affs):
        items += _conv_keys(f"AFFs.{k}.conv.0.main.0", aff.conv1)
        items += _conv_keys(f"AFFs.{k}.conv.1.main.0", aff.conv2)
    items += _conv_keys("FAM1.merge.main.0", model.fam1.merge)
    items += _scm_keys("SCM1", model.scm1)
    items += _conv_keys("FAM2.merge.main.0", model.fam2.merge)
    items += _scm_keys("SCM2", model.scm2)
    return dict(items)


def to_keras(key: str, value: np.ndarray) -> np.ndarray:
    """PyTorch layout -> Keras layout of one tensor (4-D weights transposed, biases unchanged)."""
    value = np.asarray(value, dtype=np.float32)
    return value.transpose(TORCH_TO_KERAS) if value.ndim == 4 else value


def load_state_dict(model, state_dict: Mapping[str, np.ndarray]) -> None:
    """Loads an official state dict into ``model`` strictly.

    Raises:
        CheckpointError: naming every missing, unexpected and mis-shaped tensor (and a ``module.``
            prefix from ``DataParallel``) before any weight is assigned.
    """
    variables = state_dict_variables(model)
    _check_keys(state_dict, variables)
    converted = {key: to_keras(key, value) for key, value in state_dict.items()}
    wrong = [
        f"{key}: checkpoint {np.shape(state_dict[key])}, model {_torch_shape(variables[key])}"
        for key, value in converted.items()
        if tuple(value.shape) != tuple(variables[key].shape)
    ]
    if wrong:
        raise CheckpointError("Mis-shaped tensors (wrong variant?):\n  " + "\n  ".join(wrong))
    for key, value in converted.items():
        variables[key].assign(value)


def _torch_shape(variable) -> tuple[int, ...]:
    shape = tuple(variable.shape)
    return tuple(shape[i] for i in KERAS_TO_TORCH) if len(shape) == 4 else shape


def _check_keys(state_dict, variables) -> None:
    keys, expected = set(state_dict), set(variables)
    if keys and all(k.startswith("module.") for k in keys):
        raise CheckpointError(
            "Every key starts with 'module.' (a DataParallel checkpoint); strip the prefix first."
        )
    missing, extra = sorted(expected - keys), sorted(keys - expected)
    if missing or extra:
        lines = [f"missing ({len(missing)}): {', '.join(missing[:20])}"] if missing else []
        lines += [f"unexpected ({len(extra)}): {', '.join(extra[:20])}"] if extra else []
        raise CheckpointError(
            "The checkpoint does not match the model (wrong variant?).\n  " + "\n  ".join(lines)
        )


def export_state_dict(model) -> dict[str, np.ndarray]:
    """The model's weights as an official-layout state dict (inverse of :func:`load_state_dict`)."""
    out = {}
    for key, variable in state_dict_variables(model).items():
        value = np.asarray(variable.numpy())
        out[key] = value.transpose(KERAS_TO_TORCH) if value.ndim == 4 else value
    return out


def read_checkpoint(path: str) -> dict[str, np.ndarray]:
    """Reads a state dict from an official ``.pkl``/``.pth`` (needs PyTorch) or an ``.npz``.

    A ``{"model": state_dict}`` wrapper (official checkpoints, also the per-epoch files that carry
    optimizer and scheduler entries) is unwrapped; non-tensor entries of an ``.npz`` such as the
    parity fixture's ``input``/``output_*`` arrays are ignored only when they are not
    state-dict-like (no dot in the key).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file.")
    if path.endswith(".npz"):
        try:
            with np.load(path) as archive:
                return {k: archive[k] for k in archive.files if "." in k}
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{path}: not a readable .npz file ({error}).") from error
    return _read_torch_checkpoint(path)


def _read_torch_checkpoint(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as error:
        raise CheckpointError(
            f"{path}: reading a PyTorch checkpoint needs PyTorch, which is not installed. "
            "Install the CPU build with `pip install -r requirements-torch.txt`, or convert the "
            "file to .npz on a machine that has it."
        ) from error
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt / non-checkpoint files
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({error}).") from error
    state = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict or {{'model': state_dict}}.")
    return {k: v.detach().cpu().float().numpy() for k, v in state.items() if hasattr(v, "numpy")}
