"""`raydx tune` on bad input: exit 2 and one line naming the value, before Ray starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raydx.cli import main

RAYDX = Path(sys.executable).parent / "raydx"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def _fails(args: list[str], tmp_path: Path, capsys, monkeypatch) -> str:
    """Run ``raydx tune ARGS`` in-process; return the single stderr line."""
    import ray

    import raydx.ray_env

    started: list[str] = []
    monkeypatch.setattr(raydx.ray_env, "init_ray", lambda *a, **k: started.append("init_ray"))
    monkeypatch.setattr(ray, "init", lambda *a, **k: started.append("ray.init"))
    was_running = ray.is_initialized()  # the shared test Ray may be up already
    monkeypatch.chdir(tmp_path)  # nothing may land in the repository if a check is missing
    out = tmp_path / "out"
    rc = main(["tune", *args, "--output", str(out)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, captured
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("raydx: error: ")
    assert "Traceback" not in captured.err
    assert started == []  # failed before Ray started
    assert ray.is_initialized() == was_running  # False in a run without the shared Ray
    assert not out.exists()  # and before the output folder was claimed
    assert not (tmp_path / "runs").exists()
    return lines[0]


def test_missing_data_path(tmp_path, capsys, monkeypatch) -> None:
    line = _fails(["--data", "/nonexistent/breast.npz"], tmp_path, capsys, monkeypatch)
    assert "'/nonexistent/breast.npz'" in line
    assert "does not exist" in line


def test_unknown_data_source(tmp_path, capsys, monkeypatch) -> None:
    line = _fails(["--data", "synthetc"], tmp_path, capsys, monkeypatch)
    assert "'synthetc'" in line and "Did you mean 'synthetic'" in line


def test_space_with_misspelled_key(tmp_path, capsys, monkeypatch) -> None:
    space = _write(tmp_path, "params:\n  lrr: {type: float, low: 1.0e-4, high: 1.0e-2}\n")
    line = _fails(["--space", str(space)], tmp_path, capsys, monkeypatch)
    assert "params.lrr" in line
    assert "Did you mean 'lr'" in line
    assert str(space) in line  # names the file


def test_space_with_low_above_high(tmp_path, capsys, monkeypatch) -> None:
    space = _write(tmp_path, "params:\n  lr: {type: float, low: 0.1, high: 0.01}\n")
    line = _fails(["--space", str(space)], tmp_path, capsys, monkeypatch)
    assert "params.lr" in line
    assert "low=0.1" in line and "high=0.01" in line


def test_space_with_unknown_model(tmp_path, capsys, monkeypatch) -> None:
    space = _write(
        tmp_path, "params:\n  model: {type: categorical, choices: [cnn_tiny, cnn_tinny]}\n"
    )
    line = _fails(["--space", str(space)], tmp_path, capsys, monkeypatch)
    assert "'cnn_tinny'" in line
    assert "Did you mean 'cnn_tiny'" in line


def test_one_fold(tmp_path, capsys, monkeypatch) -> None:
    line = _fails(["--folds", "1"], tmp_path, capsys, monkeypatch)
    assert line == "raydx: error: folds must be >= 2, but got folds=1."


def test_negative_report_interval(tmp_path, capsys, monkeypatch) -> None:
    line = _fails(["--report-interval-s", "-1"], tmp_path, capsys, monkeypatch)
    assert line == "raydx: error: report_interval_s must be >= 0, but got report_interval_s=-1.0."


def test_unknown_positive_class(tmp_path, capsys, monkeypatch) -> None:
    args = ["--data", "synthetic:60", "--positive-class", "malignnt"]
    line = _fails(args, tmp_path, capsys, monkeypatch)
    assert "'malignnt'" in line
    assert "Did you mean 'malignant'" in line


def test_unknown_scheduler(tmp_path, capsys, monkeypatch) -> None:
    line = _fails(["--scheduler", "ashaa"], tmp_path, capsys, monkeypatch)
    assert "'ashaa'" in line and "Did you mean 'asha'" in line


def test_space_run_section_overridden_by_bad_flag(tmp_path, capsys, monkeypatch) -> None:
    # The space file allows the run; the flag is what is wrong, and the message says so.
    space = _write(
        tmp_path,
        "run: {folds: 3}\nparams:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-2}\n",
    )
    line = _fails(["--space", str(space), "--epochs", "0"], tmp_path, capsys, monkeypatch)
    assert line == "raydx: error: epochs must be >= 1, but got epochs=0."


def test_limit_below_the_number_of_strata(tmp_path, capsys, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 30), ("val", 10), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
    data = tmp_path / "toy.npz"
    np.savez(data, **arrays)
    # 3 official splits x 2 labels = 6 strata, but only 4 rows asked for.
    line = _fails(["--data", str(data), "--limit", "4"], tmp_path, capsys, monkeypatch)
    assert "limit" in line


def test_tune_help(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["tune", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--data", "--folds", "--trials", "--epochs", "--output", "--seed", "--space"):
        assert flag in out, flag


def test_bad_flag_type_is_argparse_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["tune", "--folds", "three"])
    assert info.value.code == 2
    assert "--folds" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "suggestion"),
    [
        ("--cpus-per-fold", "--cpus-per-worker"),
        ("--trails", "--trials"),
        ("--gpus-per-fold=1", "--gpus-per-worker"),
        ("--time-budget", "--time-budget-min"),  # no abbreviations: it would run a search
        ("--epoch", "--epochs"),
    ],
)
def test_a_mistyped_or_renamed_flag_gets_a_suggestion(capsys, flag: str, suggestion: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["tune", flag, "1"] if "=" not in flag else ["tune", flag])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized argument '{flag}'. Did you mean '{suggestion}'?" in err


def _cv_fails(args: list[str], tmp_path: Path, capsys) -> str:
    out = tmp_path / "out"
    rc = main(["cv", *args, "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("raydx: error: "), err
    assert not out.exists()
    return err[0]


def test_cv_refuses_a_missing_config(tmp_path, capsys) -> None:
    line = _cv_fails(["--config", str(tmp_path / "best.yaml")], tmp_path, capsys)
    assert f"config '{tmp_path / 'best.yaml'}' does not exist" in line


def test_cv_refuses_a_search_space(tmp_path, capsys) -> None:
    """A space file is not one configuration: say which parameter is a range."""
    space = Path(__file__).resolve().parents[1] / "search_spaces" / "cnn.yaml"
    line = _cv_fails(["--config", str(space)], tmp_path, capsys)
    assert "holds a search space (parameter 'depth' is a range or a choice)" in line


def test_cv_refuses_a_runs_best_yaml_copied_away_from_its_run(tmp_path, capsys) -> None:
    """Its data is in the run.json it left behind: the default, synthetic, is not it (an
    audit: a BreastMNIST winner re-checked on 600 generated images, exit 0)."""
    cfg = tmp_path / "best.yaml"
    cfg.write_text("trial_id: abc123\ncv_auc_mean: 0.9\nparams: {model: cnn_tiny}\n")
    line = _cv_fails(["--config", str(cfg)], tmp_path, capsys)
    assert "is a run's best.yaml (trial abc123), but no run.json lies beside it" in line


def test_cv_refuses_an_unknown_parameter_value(tmp_path, capsys) -> None:
    cfg = tmp_path / "best.yaml"
    cfg.write_text("params: {model: cnn, optimizer: adamm}\n")
    line = _cv_fails(["--config", str(cfg), "--data", "synthetic"], tmp_path, capsys)
    assert "'adamm'" in line and "Did you mean 'adam'" in line


def test_cv_has_no_search_flags(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["cv", "--config", "best.yaml", "--trials", "3"])
    assert info.value.code == 2
    assert "unrecognized argument '--trials'" in capsys.readouterr().err


def test_no_test_is_a_cv_flag_only(capsys) -> None:
    """A search always scores its winner once; only a re-check may leave the test alone."""
    from raydx.cli import _parse

    assert _parse(["cv", "--config", "best.yaml", "--no-test"]).score_test is False
    assert _parse(["cv", "--config", "best.yaml"]).score_test is None  # the default: scored
    with pytest.raises(SystemExit):
        main(["tune", "--no-test"])
    assert "unrecognized argument '--no-test'" in capsys.readouterr().err


def test_cross_validate_refuses_search_options() -> None:
    from raydx.errors import RaydxError
    from raydx.run import cross_validate

    with pytest.raises(RaydxError, match=r"one fixed configuration; trials=3 is a search option"):
        cross_validate({"model": "cnn"}, trials=3)


def test_cross_validate_names_a_misspelt_option_before_it_starts() -> None:
    from raydx.errors import RaydxError
    from raydx.run import cross_validate

    said: list[str] = []
    with pytest.raises(RaydxError, match=r"Unknown run option 'fold'\. Did you mean 'folds'\?"):
        cross_validate({"model": "cnn"}, log=said.append, fold=3)
    assert said == []  # no "cross-validating ..." line for a run that never starts


@pytest.mark.slow
def test_console_script(tmp_path: Path) -> None:
    """The installed entry point: exit status and the one-line message reach the shell."""
    assert RAYDX.exists(), RAYDX
    proc = subprocess.run(
        [str(RAYDX), "tune", "--data", "/nonexistent.npz", "--output", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("raydx: error: data path '/nonexistent.npz' does not exist")
    assert proc.stdout == ""
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("finished", [False, True])
def test_an_output_holding_a_run_is_refused_before_ray_starts(
    tmp_path, capsys, monkeypatch, finished: bool
) -> None:
    import ray

    import raydx.ray_env

    started: list[str] = []
    monkeypatch.setattr(raydx.ray_env, "init_ray", lambda *a, **k: started.append("init_ray"))
    monkeypatch.setattr(ray, "init", lambda *a, **k: started.append("ray.init"))
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text('{"options": {"score_test": true}}')
    if finished:
        (old / "test_metrics.json").write_text("{}")
    rc = main(["tune", "--data", "synthetic", "--output", str(old)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and started == []
    if finished:
        assert err.endswith("already holds a finished raydx run; choose another --output.")
    else:
        assert f"(or continue it with: raydx tune --resume {old.resolve()})" in err
    assert sorted(p.name for p in old.iterdir()) == sorted(
        ["run.json", *(["test_metrics.json"] if finished else [])]
    )


def test_raydx_warnings_are_console_lines(tmp_path, capsys, monkeypatch) -> None:
    """A raydx warning reads like its errors, without Python's source line; another
    library's keeps Python's form, and a caller in Python gets its showwarning back."""
    import warnings

    import raydx.run
    from raydx.config import legacy_params

    def cross_validate(config, **overrides) -> None:
        legacy_params({"family": "autoencoder", "model": "cnn_seed"})  # warns as raydx/cli
        warnings.warn("from elsewhere", UserWarning, stacklevel=1)  # this test's file

    monkeypatch.setattr(raydx.run, "cross_validate", cross_validate)
    with warnings.catch_warnings(record=True) as python_handled:
        warnings.simplefilter("always")
        before = warnings.showwarning
        assert main(["cv", "--config", str(tmp_path / "best.yaml")]) == 0
        assert warnings.showwarning is before
    assert capsys.readouterr().err.splitlines() == [
        "raydx: warning: family 'autoencoder' with model='cnn_seed', which an older raydx "
        "trained as 'conv_ae' (with cnn_seed's parameters only): read as 'conv_ae'."
    ]
    assert [str(w.message) for w in python_handled] == ["from elsewhere"]


def test_resume_takes_verbose_and_refuses_the_options_that_change_the_run(
    tmp_path, capsys, monkeypatch
) -> None:
    """--resume runs with the saved options; --verbose only prints the workers' logs, so a
    user who wants to see why a resumed trial fails need not start over."""
    import raydx.run

    called: list[tuple[Path, bool | None]] = []
    monkeypatch.setattr(raydx.run, "resume", lambda d, verbose=None: called.append((d, verbose)))
    run = tmp_path / "run"
    assert main(["tune", "--resume", str(run), "--verbose"]) == 0
    assert main(["tune", "--resume", str(run)]) == 0
    assert called == [(run, True), (run, None)]
    capsys.readouterr()
    assert main(["tune", "--resume", str(run), "--verbose", "--epochs", "3"]) == 2
    assert capsys.readouterr().err == (
        "raydx: error: --resume continues a run with its saved options; drop --epochs.\n"
    )
    assert len(called) == 2


def test_an_interrupted_predict_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    import raydx.predict

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(raydx.predict, "predict_files", interrupted)
    rc = main(["predict", "--model", str(tmp_path), "--data", str(tmp_path)])
    assert rc == 130
    assert capsys.readouterr().err == "raydx: interrupted\n"


def test_the_package_and_the_module_give_one_version() -> None:
    """Runs and models record raydx.__version__; pip and the Docker image read
    pyproject.toml's: one number, moved together."""
    import tomllib
    from pathlib import Path

    import raydx

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == raydx.__version__
