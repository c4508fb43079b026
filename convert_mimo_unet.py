"""Converts an official MIMO-UNet checkpoint to Keras weights.

    python convert_mimo_unet.py --src MIMO-UNet.pkl --variant mimo_unet --out mimo_unet.weights.h5
    python convert_mimo_unet.py --src MIMO-UNetPlus.pkl --variant mimo_unet_plus \
        --out mimo_unet_plus.weights.h5

``--src`` is an official ``torch.save`` file (``{"model": state_dict}``; needs PyTorch, see
``requirements-torch.txt``; read with ``weights_only=True``) or an ``.npz`` of the state dict under
its exact key names (no PyTorch needed). Every key is mapped strictly (mimo_unet.md Sec. 12); a
checkpoint with missing, extra or mis-shaped tensors is refused with their names. An existing
``--out`` is replaced only with ``--overwrite`` (checked before anything is read). The output is
written to a temporary name and renamed (:mod:`fileio`), so a failed run leaves nothing behind;
the result line is printed on stdout.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys

from absl import app, flags

import cli
import fileio
from cli import define_once, inference_flags
from inference import outputs

FLAGS = flags.FLAGS
# define_once: evaluate.py / export.py / deblur.py and the training scripts share flag names (--out,
# --variant) and may be imported in one process with this script.
define_once(flags.DEFINE_string, "src", None, "Official .pkl/.pth (PyTorch) or .npz state dict.")
define_once(
    flags.DEFINE_string,
    "variant",
    None,
    "mimo_unet or mimo_unet_plus; guessed from the number of tensors (244 or 532) if omitted.",
)
define_once(flags.DEFINE_string, "out", None, "Output file (here: FILE.weights.h5).")
inference_flags.define_overwrite_flag()
cli.declare_key_flags(["src", "variant", "out", "overwrite"])

TENSORS_PER_VARIANT = {244: "mimo_unet", 532: "mimo_unet_plus"}


def guess_variant(state_dict) -> str:
    """MIMO-UNet has 244 state-dict tensors, MIMO-UNet+ 532 (mimo_unet.md Sec. 3.1)."""
    if len(state_dict) not in TENSORS_PER_VARIANT:
        raise ValueError(
            f"{len(state_dict)} tensors match neither MIMO-UNet (244) nor MIMO-UNet+ (532); "
            "pass --variant to see which keys differ."
        )
    return TENSORS_PER_VARIANT[len(state_dict)]


def convert(src: str, out: str, variant: str | None = None) -> str:
    """Reads ``src``, loads it strictly into the variant and writes ``out``; returns the variant."""
    import models
    from models.mimo_unet_weights import load_state_dict, read_checkpoint

    state_dict = read_checkpoint(src)
    variant = variant or guess_variant(state_dict)
    model = models.build_model(variant)
    load_state_dict(model, state_dict)
    # Keras writes only to a path: save into a private temporary folder beside ``out`` (stale ones
    # of killed runs are removed), then write the bytes atomically with the umask's mode.
    temporary = fileio.temporary_dir(out)
    try:
        path = os.path.join(temporary, os.path.basename(out))
        model.save_weights(path, overwrite=True)
        with open(path, "rb") as handle:
            fileio.atomic_write_bytes(out, handle.read())
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return variant


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """One convert_mimo_unet.py run, read from the flags once (:func:`config_from_flags`);
    ``variant`` None: read from the checkpoint."""

    src: str | None = None
    out: str | None = None
    variant: str | None = None
    overwrite: bool = False


def config_from_flags() -> ConvertConfig:
    """convert_mimo_unet.py's flags as one :class:`ConvertConfig`."""
    return ConvertConfig(
        src=FLAGS.src, out=FLAGS.out, variant=FLAGS.variant, overwrite=FLAGS.overwrite
    )


def check_config(config: ConvertConfig) -> None:
    """The checks that need no TensorFlow; raises ValueError with the rule."""
    if not config.src or not config.out:
        raise ValueError("--src and --out are required.")
    if config.variant not in (None, "mimo_unet", "mimo_unet_plus"):
        raise ValueError(f"--variant {config.variant}: expected mimo_unet or mimo_unet_plus.")
    if not config.out.endswith(".weights.h5"):
        raise ValueError(f"--out {config.out}: Keras weight files must end in .weights.h5.")
    outputs.check_file_target(config.out, "--out")
    outputs.refuse_existing([config.out], "--out", config.overwrite)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = config_from_flags()
    try:
        check_config(config)
        cli.import_tensorflow()
        variant = convert(config.src, config.out, config.variant)
    except (ValueError, OSError) as error:  # CheckpointError, variant mismatch, OutputError
        sys.exit(f"convert_mimo_unet.py: error: {error}")
    print(f"Wrote {config.out} ({variant}).")


if __name__ == "__main__":
    cli.run(main)
