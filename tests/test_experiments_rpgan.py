"""experiments_rpgan.py: every table prints its rows (blurred input, identity-prior HQS, RP-GAN,
true-flow variants on a flow-labelled set) on a tiny RP-GAN run directory of the run-directory
contract (tiny G and SEN, width_divisor 16) and a tiny synthetic flow set; rows read from one run
equal separate runs; bad inputs are refused in one line."""

import json
import os

import numpy as np
import pytest

import experiments_rpgan
from data import synthetic
from tests.framework_checks import build_tiny_networks, write_rpgan_run
from tests.train_checks import parsed_flags, run_main

# The defaults train_rpgan.py validates with (levels 3), as its run_config.json records them.
RUN_FRAMEWORK = {"levels": 3, "betas": [0.02, 0.1, 0.5], "cg_tol": 1e-5, "cg_max_iter": 100}
# Two flow-labelled test pairs of 48 x 48 (two sharp sources), |u|, |v| <= 3 px.
FLOW_SET = dict(kind="flow", size=48, train_pairs=0, test_pairs=2, u_max=3.0, flows_per_image=1)
FAST = ["--levels", "2", "--iterations_list", "1,2", "--levels_list", "1,2"]


def write_run(folder, use_dp=True, sen=True, seed=0):
    """An RP-GAN run directory as train_rpgan.py writes it (``write_rpgan_run``: run_config.json,
    sen.weights.h5 unless ``sen`` is False, final.weights.h5; tiny random G and SEN from
    ``seed``), its run_config.json also recording ``use_dp``."""
    generator, sen_model = build_tiny_networks(seed)
    write_rpgan_run(
        folder,
        generator,
        sen_model,
        checkpoint=False,
        sen_weights=sen,
        framework=RUN_FRAMEWORK,
    )
    config_path = folder / "run_config.json"
    config = json.loads(config_path.read_text())
    config["loss"] = {"use_dp": use_dp}
    config_path.write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    main = write_run(root / "rpgan")
    return main, write_run(root / "rpgan_no_dp", use_dp=False, sen=False, seed=1)


@pytest.fixture(scope="module", autouse=True)
def load_each_run_once():
    """Each run directory is loaded by the real loaders once per module and then reused, so that
    SEN and G are traced once (``experiments_rpgan.traced``): tracing dominates these tests."""
    cache = {}

    def once(function):
        def cached(path, *args):
            key = (function.__name__, path, *(a for a in args if isinstance(a, str)))
            if key not in cache:
                cache[key] = function(path, *args)
            return cache[key]

        return cached

    with pytest.MonkeyPatch.context() as patch:
        for name in ("load_rpgan_run", "load_generator_run"):
            patch.setattr(experiments_rpgan, name, once(getattr(experiments_rpgan, name)))
        yield


@pytest.fixture(scope="module")
def flow_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "flow"
    return synthetic.build_dataset(str(folder), synthetic.SynthConfig(**FLOW_SET))


@pytest.fixture(scope="module")
def plain_set(flow_set, tmp_path_factory):
    """The same pairs without flow labels (``test/{blur,sharp}/<name>.png``)."""
    root = tmp_path_factory.mktemp("plain")
    for kind in ("blur", "sharp"):
        (root / "test" / kind).mkdir(parents=True)
    for seq in sorted(os.listdir(os.path.join(flow_set, "test"))):
        for kind in ("blur", "sharp"):
            folder = os.path.join(flow_set, "test", seq, kind)
            for name in os.listdir(folder):
                os.link(os.path.join(folder, name), root / "test" / kind / f"{seq}_{name}")
    return root


def rows_of(text):
    """The Markdown rows of the printed table, as lists of cells (header first)."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_table_2_with_true_flow_rows(runs, flow_set, tmp_path, capsys):
    out = tmp_path / "table2.json"
    args = ["--table", "2", "--checkpoint", str(runs[0]), "--data_dir", flow_set, "--out", str(out)]
    assert run_main(experiments_rpgan, *args, *FAST) == 0
    rows = rows_of(capsys.readouterr().out)
    assert rows[0][-1] == "paper, GoPro (not this set)"
    methods = [(r[0], r[1], r[2], r[3]) for r in rows[1:]]
    assert methods == [
        ("blurred input", "-", "-", "-"),
        ("identity-prior HQS", "SEN", "2", "1"),
        ("RP-GAN framework", "SEN", "2", "1"),
        ("RP-GAN framework", "SEN", "2", "2"),
        ("identity-prior HQS", "true", "2", "1"),
        ("RP-GAN framework", "true", "2", "1"),
        ("RP-GAN framework", "true (1st global it.)", "2", "2"),
    ]
    result = json.loads(out.read_text())
    assert result["num_images"] == 2 and result["true_flow_rows"]
    assert all(r["seconds"] > 0 for r in result["rows"][1:] if r["levels"] == 2)
    # Levels 2 is not the paper's setting (3): no paper number beside the rows.
    assert all(not r.get("paper") for r in result["rows"])


def test_rows_read_from_one_run_equal_separate_runs(runs, flow_set):
    """Table 4's level-1 row of a 2-level run equals a 1-level framework; Table 2's first global
    iteration of a 2-iteration run equals a 1-iteration framework."""
    from deconvolution.framework import BlindDeblurFramework

    run = experiments_rpgan.load_rpgan_run(str(runs[0]))
    sen = experiments_rpgan.flow_function(run.sen)
    prior = experiments_rpgan.prior_function(run.generator)
    blur = np.random.default_rng(0).random((1, 48, 48, 3), np.float32)
    method = experiments_rpgan.Method(
        "m", "m", "SEN", prior, 2, 2, [(1, 1), (1, 2), (2, 2)], (0.02, 0.1)
    )
    results = experiments_rpgan.run_method(method, method.global_iteration(sen, {}), blur, None)
    one_level = BlindDeblurFramework(sen, prior, levels=1, betas=(0.02,))(blur)
    np.testing.assert_allclose(results[(1, 1)][0], one_level[0], atol=1e-6)
    one_iteration = BlindDeblurFramework(sen, prior, levels=2, betas=(0.02, 0.1))(blur)
    np.testing.assert_allclose(results[(1, 2)][0], one_iteration[0], atol=1e-6)
    # Seconds at the end of each global iteration only (level 1 ends inside the graph).
    assert results[(1, 1)][1] is None and 0 < results[(1, 2)][1] < results[(2, 2)][1]


def test_table_4_and_appendix_b_without_flow_labels(runs, plain_set, capsys):
    common = ["--checkpoint", str(runs[0]), "--data_dir", str(plain_set), *FAST]
    assert run_main(experiments_rpgan, "--table", "4", *common) == 0
    text = capsys.readouterr().out
    rows = rows_of(text)
    assert rows[0][-1] == "paper, data set not stated (not this set)"
    assert [(r[0], r[2]) for r in rows[2:]] == [
        ("identity-prior HQS", "1"),
        ("identity-prior HQS", "2"),
        ("RP-GAN framework", "1"),
        ("RP-GAN framework", "2"),
    ]
    assert rows[4][-1] == "28.77" and rows[5][-1] == "29.58"  # the paper's levels 1, 2
    assert "No flow labels in this set" in text
    args = ["--table", "appendix_b", "--no_dp_checkpoint", str(runs[1]), *common]
    assert run_main(experiments_rpgan, *args) == 0
    rows = rows_of(capsys.readouterr().out)
    assert [r[0] for r in rows[1:]] == [
        "blurred input",
        "identity-prior HQS",
        "RP-GAN with D_p (main run)",
        "RP-GAN without D_p (use_dp=False)",
    ]


def test_table_3_prints_the_koehler_numbers(runs, plain_set, capsys):
    args = ["--table", "3", "--checkpoint", str(runs[0]), "--data_dir", str(plain_set)]
    args += ["--iterations_list", "1", "--max_images", "1"]
    assert run_main(experiments_rpgan, *args) == 0
    rows = rows_of(capsys.readouterr().out)
    assert rows[0][-1] == "paper, Köhler (not this set)"
    assert rows[-1][:4] == ["RP-GAN framework", "SEN", "3", "1"]
    assert rows[-1][-1] == "27.25 / 0.8642"


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "--checkpoint: required"),
        (["--checkpoint", "/nowhere/run"], "--checkpoint /nowhere/run: no such file"),
        (["--checkpoint", "RUN", "--data_dir", "/nowhere/data"], "/nowhere/data"),
        (["--checkpoint", "RUN", "--table", "appendix_b"], "needs --no_dp_checkpoint"),
        (["--checkpoint", "RUN", "--levels_list", "0,2"], "--levels_list 0,2: expected positive"),
        (["--checkpoint", "NODP"], "the run has no sen.weights.h5"),
        (["--checkpoint", "DATA"], "no checkpoint found"),
        (
            ["--checkpoint", "RUN", "--table", "appendix_b", "--no_dp_checkpoint", "RUN"],
            "use_dp=true",
        ),
    ],
)
def test_bad_inputs_are_one_line_errors(runs, plain_set, args, message, capsys):
    values = {"RUN": str(runs[0]), "NODP": str(runs[1]), "DATA": str(plain_set)}
    args = [values.get(a, a) for a in args]
    if "--data_dir" not in args:
        args += ["--data_dir", str(plain_set)]
    code = run_main(experiments_rpgan, *args)
    assert isinstance(code, str) and code.startswith("experiments_rpgan.py: error: "), code
    assert message in code and "\n" not in code, code


def test_out_is_refused_when_it_exists(runs, plain_set, tmp_path):
    out = tmp_path / "exists.json"
    out.write_text("{}")
    args = ["--checkpoint", str(runs[0]), "--data_dir", str(plain_set), "--out", str(out)]
    code = run_main(experiments_rpgan, *args)
    assert "exists" in code and out.read_text() == "{}"


def test_default_data_is_the_flow_set_of_the_runs_sen(runs, monkeypatch, flow_set, capsys):
    from data import default_data

    asked = []
    monkeypatch.setattr(default_data, "default_flow_dir", lambda u: asked.append(u) or flow_set)
    u_max = experiments_rpgan.default_u_max(str(runs[0]))  # the run's SEN: flow-23
    with parsed_flags("experiments_rpgan.py"):
        _, info, labels = experiments_rpgan.open_data(None, "test", "blur", u_max)
    assert asked == [23.0] and info["data_dir"] == flow_set and len(labels) == 2
    assert "synthetic flow-23 test set" in capsys.readouterr().out
