"""Which model an inference command runs, as frozen dataclasses (no TensorFlow, no flags).

A command reads its model-source flags once, at its entry point
(:func:`cli.inference_flags.model_source`, :func:`cli.inference_flags.framework_settings`), and
passes these objects to the loaders (:func:`inference.model_io.restorer_from_source`,
:func:`inference.flow_io.flow_estimator_from_source`). Field names are the flag names.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Exactly one of ``checkpoint`` (a run, checkpoint folder or prefix), ``weights`` (a
    ``.weights.h5`` with ``model`` / ``model_kwargs`` JSON, or a ``.keras`` file) and
    ``saved_model`` (an export.py folder); ``self_ensemble`` none | rot4 | x8; ``jit_compile``
    XLA (commands that run the model many times)."""

    checkpoint: str | None = None
    weights: str | None = None
    model: str | None = None
    model_kwargs: str | None = None
    saved_model: str | None = None
    self_ensemble: str = "none"
    jit_compile: bool = False
    precision: str = "float32"


@dataclasses.dataclass(frozen=True)
class FrameworkSettings:
    """The blind deblurring framework's settings (an RP-GAN run as ``checkpoint``); None = not
    given (the run's, or the framework's default). ``betas`` is the comma list as given."""

    levels: int | None = None
    global_iterations: int | None = None
    betas: str | None = None
    flow_source: str | None = None
    sen_checkpoint: str | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The settings' names, which are also their flags' names."""
        return tuple(field.name for field in dataclasses.fields(cls))

    def given(self) -> dict:
        """``{name: value}`` of every setting (None = not given), the loaders' keywords."""
        return dataclasses.asdict(self)
