"""SEN's two-stage run below ``train_sen.py`` (sen_rpgan.md section 5; register #9, #10): the stage
checks, the flow set of a configuration, and the stage-1 run that stage 2 starts from, whose model
switches and ``u_max`` stage 2 inherits.

Stage 1 trains a one-stack SEN; stage 2 (``stage=2``, ``init_from`` a finished stage-1 run folder)
builds the two-stack SEN with stack 1 copied from that run's ``final.weights.h5``. Stage 2 must use
the stage-1 model's switches (``sen_skips``, ``sen_output``, ``dilation_rates``, ``width_divisor``
and any other recorded ``model_kwargs``) and data set (``u_max``): :func:`inherit_stage1` takes them
from the run's ``run_config.json``, and a value given on the command line that differs is an error.

The configuration is a :class:`training.config.TrainConfig` whose ``paper`` is train_sen.py's
``SenRecipe``. Nothing here reads flags or imports TensorFlow; every problem is one
:class:`config.ConfigError` line naming the flag.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection

import rundir
from config import ConfigError
from training.config import TrainConfig, replace

STAGES = (1, 2)
U_MAX_CHOICES = (23, 46)
# Constructor arguments of SEN that are recipe fields (and flags); upsampling, res2_skip and init
# come from model_kwargs only; num_stacks is the stage's.
MODEL_FLAG_KEYS = ("sen_skips", "sen_output", "dilation_rates", "width_divisor")


def check_stage(config: TrainConfig) -> None:
    """``stage`` / ``init_from`` / ``sen_joint_finetune`` / ``u_max`` / ``num_stacks``
    consistency (a ``model_kwargs`` text that is not a JSON object is left to its own check)."""
    recipe = config.paper
    if recipe.stage not in STAGES:
        raise ConfigError(f"--stage must be 1 or 2, got {recipe.stage}.")
    if recipe.stage == 1 and recipe.init_from:
        raise ConfigError("--init_from is for --stage 2 (stage 1 starts from scratch).")
    if recipe.stage == 1 and recipe.sen_joint_finetune:
        raise ConfigError("--sen_joint_finetune is for --stage 2.")
    if recipe.stage == 2 and not recipe.init_from:
        raise ConfigError("--stage 2 needs --init_from STAGE1_RUN_DIR (stack 1's weights).")
    if recipe.u_max not in U_MAX_CHOICES:
        raise ConfigError(f"--u_max must be 23 or 46, got {recipe.u_max}.")
    if "num_stacks" in _model_kwargs(config.model_kwargs):
        raise ConfigError("--model_kwargs: num_stacks is set by --stage (1 or 2).")


def dilation_rates(config: TrainConfig) -> list[int]:
    """The 3 rates of SEN's dilated front layers as integers (the recipe holds the flag's values:
    strings from the command line, integers from ``model_kwargs`` or a stage-1 run)."""
    values = config.paper.dilation_rates
    try:
        rates = [int(v) for v in values]
    except ValueError:
        got = list(values)
        raise ConfigError(f"--dilation_rates must be 3 integers >= 1, got {got}.") from None
    if len(rates) != 3 or min(rates) < 1:
        raise ConfigError(f"--dilation_rates must be 3 integers >= 1, got {rates}.")
    return rates


def flow_root(config: TrainConfig) -> str:
    """The flow set: ``<data_dir>/flow-<u_max>``, or without ``data_dir`` the small default set of
    :func:`data.default_data.default_flow_dir` (generated on first use)."""
    data_dir, u_max = config.data.data_dir, config.paper.u_max
    if data_dir:
        return os.path.join(data_dir, f"flow-{u_max}")
    from data import default_data

    return default_data.default_flow_dir(u_max)  # logs where it generates on first use


def check_flow_set(config: TrainConfig) -> None:
    """An existing ``data_dir`` must hold the ``flow-<u_max>`` set."""
    data_dir, u_max = config.data.data_dir, config.paper.u_max
    if data_dir and os.path.isdir(data_dir) and not os.path.isdir(flow_root(config)):
        raise ConfigError(
            f"--data_dir {data_dir} has no flow-{u_max} folder (the --u_max {u_max} set; make it "
            "with `python -m data.make_synthetic --kind flow`)."
        )


def stage1_weights(config: TrainConfig) -> str | None:
    """Stage 2: the stage-1 run's ``final.weights.h5`` (stack 1); stage 1: None."""
    return rundir.final_weights_path(config.paper.init_from) if config.paper.stage == 2 else None


def read_stage1_run(run: str) -> tuple[dict, str]:
    """``(run_config, final weights path)`` of a finished stage-1 SEN run; ``ConfigError`` (one
    line naming the folder) otherwise."""
    what = f"--init_from {run}"
    if not os.path.isdir(run):
        raise ConfigError(f"{what}: no such run folder.")
    if not os.path.isfile(rundir.run_config_path(run)):
        raise ConfigError(f"{what}: no {rundir.RUN_CONFIG} (not a train_sen.py run).")
    try:
        recorded = rundir.read_json(rundir.run_config_path(run))
    except rundir.RunDirError as error:
        raise ConfigError(f"{what}: cannot read {rundir.RUN_CONFIG} ({error}).") from None
    recorded = recorded if isinstance(recorded, dict) else {}
    kwargs = recorded.get("model_kwargs")
    if recorded.get("model") != "sen" or not isinstance(kwargs, dict):
        raise ConfigError(f"{what}: not a SEN run (model {recorded.get('model')!r}).")
    if recorded.get("stage") != 1 or kwargs.get("num_stacks") != 1:
        raise ConfigError(f"{what}: not a stage-1 SEN run (stage {recorded.get('stage')!r}).")
    weights = rundir.final_weights_path(run)
    if not os.path.isfile(weights):
        raise ConfigError(f"{what}: no {rundir.FINAL_WEIGHTS} (has the stage-1 run finished?).")
    return recorded, weights


def inherit_stage1(config: TrainConfig, given: Collection[str] = ()) -> TrainConfig:
    """Stage 2: ``config`` with the model switches and ``u_max`` of the stage-1 run ``init_from``
    (stage 1: ``config`` itself).

    Args:
        config: the run's configuration, ``model_kwargs`` already given to the recipe fields.
        given: names of the settings given on the command line (their values are the config's);
            a recipe switch also counts as given when ``model_kwargs`` names it.
    Raises ``ConfigError`` naming a given value that differs from the stage-1 run, a
    ``model_kwargs`` key the stage-1 run left at the model's default, or an unusable run folder.
    """
    recipe = config.paper
    if recipe.stage != 2:
        return config
    run = recipe.init_from
    recorded_config, _ = read_stage1_run(run)
    recorded = {k: v for k, v in recorded_config["model_kwargs"].items() if k != "num_stacks"}
    kwargs = _model_kwargs(config.model_kwargs)
    values = {}
    for key, value in recorded.items():
        if key in MODEL_FLAG_KEYS:
            if key not in kwargs and key not in given:
                values[key] = value
                continue
            mine = getattr(recipe, key)
        else:
            mine = kwargs.setdefault(key, value)
        _same_as_stage1(key, mine, value, run)
    unknown = sorted(set(kwargs) - set(recorded))
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"--model_kwargs: {key}={kwargs[key]!r}, but the stage-1 run {run} used the model's "
            "default; stage 2 takes the stage-1 model's switches."
        )
    values["model_kwargs"] = json.dumps(kwargs) if kwargs else None
    return replace(config, **values, **_inherited_u_max(recipe, given, recorded_config, run))


def _inherited_u_max(recipe, given, recorded_config, run) -> dict:
    u_max = recorded_config.get("u_max")
    if u_max is None:
        return {}
    if "u_max" in given and recipe.u_max != u_max:
        raise ConfigError(f"--u_max {recipe.u_max}, but the stage-1 run {run} used {u_max}.")
    return {"u_max": int(u_max)}


def _same_as_stage1(key, mine, recorded, run):
    if _normal(key, mine) != _normal(key, recorded):
        raise ConfigError(
            f"{key}={mine!r} differs from the stage-1 run {run} ({key}={recorded!r}); stage 2 "
            "takes the stage-1 model's switches (leave it out)."
        )


def _normal(key, value):
    if key != "dilation_rates":
        return value
    try:
        return [int(v) for v in value]
    except (TypeError, ValueError):
        return value  # not rates: differs from the recorded ones


def _model_kwargs(text) -> dict:
    """``model_kwargs`` JSON as a dict; {} for none or for a text that is not a JSON object
    (refused with its own message where the command reads it)."""
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
