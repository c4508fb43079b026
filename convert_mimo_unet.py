"""Converts an official MIMO-UNet checkpoint to Keras weights.

    python convert_mimo_unet.py --src MIMO-UNet.pkl --variant mimo_unet --out mimo_unet.weights.h5
    python convert_mimo_unet.py --src MIMO-UNetPlus.pkl --variant mimo_unet_plus \
        --out mimo_unet_plus.weights.h5

``--src`` is an official ``torch.save`` file (``{"model": state_dict}``; needs PyTorch, see
``requirements-torch.txt``; read with ``weights_only=True``) or an ``.npz`` of the state dict under
its exact key names (no PyTorch needed). Every key is mapped strictly (mimo_unet.md Sec. 12); a
checkpoint with missing, extra or mis-shaped tensors is refused with their names. The output is
written to a temporary name and renamed, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import os
import sys
import tempfile

from absl import app, flags

from training.flags import define_once

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
    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".weights.h5", dir=directory)
    os.close(handle)
    try:
        model.save_weights(temporary, overwrite=True)
        os.replace(temporary, out)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return variant


def main(argv):
    del argv
    if not FLAGS.src or not FLAGS.out:
        raise app.UsageError("--src and --out are required.")
    if FLAGS.variant not in (None, "mimo_unet", "mimo_unet_plus"):
        raise app.UsageError(f"--variant {FLAGS.variant}: expected mimo_unet or mimo_unet_plus.")
    if FLAGS.variant not in (None, "mimo_unet", "mimo_unet_plus"):
        raise app.UsageError(f"--variant {FLAGS.variant}: expected mimo_unet or mimo_unet_plus.")
    if not FLAGS.out.endswith(".weights.h5"):
        raise app.UsageError(f"--out {FLAGS.out}: Keras weight files must end in .weights.h5.")
    try:
        variant = convert(FLAGS.src, FLAGS.out, FLAGS.variant)
    except ValueError as error:  # CheckpointError and variant mismatch: a message, no traceback
        sys.exit(f"convert_mimo_unet: {error}")
    print(f"Wrote {FLAGS.out} ({variant}).")


if __name__ == "__main__":
    app.run(main)
