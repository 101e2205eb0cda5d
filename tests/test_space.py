"""Space files: the shipped CNN space, Optuna round trips, and one test per bad input."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest

from raydx.config import RunOptions, TrialConfig
from raydx.errors import SpaceError
from raydx.space import ParamSpec, SearchSpace, load_space, parse_space

CNN_YAML = Path(__file__).resolve().parents[1] / "search_spaces" / "cnn.yaml"

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def cnn_space() -> SearchSpace:
    return load_space(CNN_YAML)


def _specs(space: SearchSpace) -> dict[str, ParamSpec]:
    return {p.name: p for p in space.params}


def _check_sample(space: SearchSpace, values: dict) -> None:
    """Every value is inside its declared set; a param is present iff its condition holds."""
    seen: dict = {}
    for p in space.params:
        if p.active(seen):
            assert p.name in values, p.name
            assert p.contains(values[p.name]), (p.name, values[p.name])
            seen[p.name] = values[p.name]
        else:
            assert p.name not in values, p.name
    assert set(values) == set(seen)


ALL_YAML = CNN_YAML.parent / "all.yaml"


def _unless_space(**extra: dict) -> dict:
    """Every family trains a classifier except the autoencoder's anomaly mode."""
    return {
        "params": {
            "family": {"type": "categorical", "choices": ["cnn", "autoencoder"]},
            "ae_mode": {
                "type": "categorical",
                "choices": ["classifier", "anomaly"],
                "when": {"family": "autoencoder"},
            },
            "lr": {
                "type": "float",
                "low": 1e-4,
                "high": 1e-2,
                "log": True,
                "unless": {"ae_mode": "anomaly"},
            },
            **extra,
        }
    }


def test_unless_bars_a_param_only_where_the_named_value_was_suggested() -> None:
    space = parse_space(_unless_space())
    fixed = optuna.trial.FixedTrial
    cnn = space.sample(fixed({"family": "cnn", "lr": 1e-3}))
    assert cnn == {"family": "cnn", "lr": 1e-3}  # ae_mode not suggested: lr is
    ae = space.sample(fixed({"family": "autoencoder", "ae_mode": "classifier", "lr": 1e-3}))
    assert ae["lr"] == 1e-3
    anomaly = space.sample(fixed({"family": "autoencoder", "ae_mode": "anomaly"}))
    assert anomaly == {"family": "autoencoder", "ae_mode": "anomaly"}
    for seed in range(20):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        _check_sample(space, space.sample(study.ask()))


def test_unless_round_trips_and_is_checked_as_when_is() -> None:
    space = parse_space(_unless_space())
    assert parse_space(space.to_dict()) == space
    assert space.to_dict()["params"]["lr"]["unless"] == {"ae_mode": ["anomaly"]}
    bad_value = _unless_space()
    bad_value["params"]["lr"]["unless"] = {"ae_mode": "anomly"}
    with pytest.raises(SpaceError, match=r"params\.lr\.unless\.ae_mode: Unknown ae_mode 'anomly'"):
        parse_space(bad_value)
    below = _unless_space(
        weight_decay={"type": "float", "low": 0.0, "high": 0.1, "unless": {"optimizer": "sgd"}},
        optimizer={"type": "categorical", "choices": ["adam", "sgd"]},
    )
    with pytest.raises(SpaceError, match=r"'optimizer' must be defined above 'weight_decay'"):
        parse_space(below)
    empty = _unless_space()
    empty["params"]["lr"]["unless"] = {}
    with pytest.raises(SpaceError, match="unless must be a mapping"):
        parse_space(empty)


def test_an_enqueued_point_may_not_hold_a_param_its_unless_bars() -> None:
    raw = _unless_space()
    raw["enqueue"] = [{"family": "autoencoder", "ae_mode": "anomaly", "lr": 1e-3}]
    with pytest.raises(SpaceError, match=r"enqueue\[0\]\.lr: lr is not suggested when ae_mode"):
        parse_space(raw)


def test_unless_values_are_branches_the_space_check_walks() -> None:
    """A model param barred in one branch is still checked in the others: a width the
    CNN cannot take fails when read, though the anomaly branch never suggests it."""
    raw = _unless_space(
        model={"type": "fixed", "value": "cnn", "when": {"family": "cnn"}},
        width={"type": "int", "low": 0, "high": 8, "when": {"model": "cnn"}},
    )
    with pytest.raises(SpaceError, match=r"params\.width\.low"):
        parse_space(raw)


def test_all_yaml_searches_no_training_param_in_anomaly_mode() -> None:
    """The anomaly-mode autoencoder trains no classifier: its trials search only what it uses."""
    space = load_space(ALL_YAML)
    point = {
        "family": "autoencoder",
        "ae_mode": "anomaly",
        "ae_loss": "mse",
        "denoise": 0.0,
        "ae_lr": 1e-3,
        "pretrain_epochs": 10,
    }
    assert space.sample(optuna.trial.FixedTrial(point)) == {**point, "batch_size": 64}


# ---------------------------------------------------------------- the shipped space


def test_cnn_space_loads(cnn_space: SearchSpace) -> None:
    assert cnn_space.path == str(CNN_YAML)
    assert cnn_space.run_defaults() == {
        "family": "cnn",
        "folds": 5,
        "trials": 20,
        "epochs": 40,
        "scheduler": "asha",
        "grace_period": 10,
        "time_budget_min": 29,
        "operating_point": "youden",
    }
    RunOptions().replace(**cnn_space.run_defaults())
    names = cnn_space.param_names()
    assert names[0] == "model"
    for name in ("depth", "width", "optimizer", "lr", "batch_size", "hflip", "noise"):
        assert name in names
    specs = _specs(cnn_space)
    assert specs["depth"].when == (("model", ("cnn",)),)
    assert specs["lr"].log


def test_cnn_enqueued_point_is_complete_and_valid(cnn_space: SearchSpace) -> None:
    (point,) = cnn_space.enqueue_points()
    assert point["model"] == "cnn" and point["residual"] is True
    assert point["optimizer"] == "adamw" and point["lr"] == 0.003
    assert point["batch_size"] == 64 and point["lr_schedule"] == "onecycle"
    # Complete: a FixedTrial of exactly the point replays it unchanged.
    assert cnn_space.sample(optuna.trial.FixedTrial(point)) == point
    cfg = TrialConfig.from_params(point)
    assert cfg.model_params["width"] == 32 and cfg.model_params["head"] == "gap"
    assert cfg.augment.hflip == 0.5 and cfg.augment.rotate == 15.0


def test_enqueued_point_is_the_first_trial(cnn_space: SearchSpace) -> None:
    study = optuna.create_study(direction="maximize")
    for point in cnn_space.enqueue_points():
        study.enqueue_trial(point)
    trial = study.ask()
    assert cnn_space.sample(trial) == cnn_space.enqueue_points()[0]


def test_enqueue_points_are_copies(cnn_space: SearchSpace) -> None:
    cnn_space.enqueue_points()[0]["lr"] = 123.0
    assert cnn_space.enqueue_points()[0]["lr"] == 0.003


def test_samples_from_a_real_study_are_in_range(cnn_space: SearchSpace) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    models = set()
    for _ in range(40):
        trial = study.ask()
        values = cnn_space.sample(trial)
        _check_sample(cnn_space, values)
        # the one constant, model: cnn, is not an Optuna parameter
        assert trial.params == {k: v for k, v in values.items() if k != "model"}
        TrialConfig.from_params(values)
        models.add(values["model"])
        study.tell(trial, 0.5)
    assert models == {"cnn"}


def test_sampled_cnn_configurations_build() -> None:
    import torch

    from raydx.models import create_model

    space = load_space(CNN_YAML)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    built = 0
    while built < 4:
        cfg = TrialConfig.from_params(space.sample(study.ask()))
        if cfg.model == "cnn":
            model = create_model(
                cfg.model, in_channels=1, num_outputs=2, image_size=28, **cfg.model_params
            )
            assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 2), cfg.model_params
            built += 1


def test_conditional_params_follow_their_condition() -> None:
    space = parse_space(
        {
            "params": {
                "model": {"type": "categorical", "choices": ["cnn_seed", "cnn"]},
                "depth": {"type": "int", "low": 2, "high": 4, "when": {"model": "cnn"}},
                "head": {
                    "type": "categorical",
                    "choices": ["dense", "gap"],
                    "when": {"model": "cnn"},
                },
                "dense_units": {
                    "type": "categorical",
                    "choices": [64, 128],
                    "when": {"model": "cnn", "head": "dense"},
                },
                "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
                "momentum": {
                    "type": "float",
                    "low": 0.8,
                    "high": 0.99,
                    "when": {"optimizer": "sgd"},
                },
            }
        }
    )
    seed = space.sample(optuna.trial.FixedTrial({"model": "cnn_seed", "optimizer": "adam"}))
    assert seed == {"model": "cnn_seed", "optimizer": "adam"}
    gap = space.sample(
        optuna.trial.FixedTrial(
            {"model": "cnn", "depth": 3, "head": "gap", "optimizer": "sgd", "momentum": 0.9}
        )
    )
    assert gap["depth"] == 3 and gap["head"] == "gap" and gap["momentum"] == 0.9
    assert "dense_units" not in gap
    dense = space.sample(
        optuna.trial.FixedTrial(
            {"model": "cnn", "depth": 3, "head": "dense", "dense_units": 64, "optimizer": "adam"}
        )
    )
    assert dense["dense_units"] == 64 and "momentum" not in dense


def test_constants_come_back_from_define_by_run() -> None:
    space = parse_space(
        {
            "params": {
                "model": {"type": "categorical", "choices": ["cnn", "cnn_seed"]},
                "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                "batch_size": 64,
                "depth": {"type": "fixed", "value": 3, "when": {"model": "cnn"}},
            }
        }
    )
    for model in ("cnn", "cnn_seed"):
        trial = optuna.trial.FixedTrial({"model": model, "lr": 1e-3})
        constants = space.define_by_run(trial)
        expected = {"batch_size": 64, **({"depth": 3} if model == "cnn" else {})}
        assert constants == expected
        assert trial.params == {"model": model, "lr": 1e-3}  # constants are not suggested
        assert space.sample(optuna.trial.FixedTrial({"model": model, "lr": 1e-3})) == {
            "model": model,
            "lr": 1e-3,
            **expected,
        }


def test_suggest_calls_match_optuna_distributions() -> None:
    space = parse_space(
        {
            "params": {
                "model": "cnn",
                "depth": {"type": "int", "low": 2, "high": 6, "step": 2},
                "width": {"type": "int", "low": 8, "high": 64, "log": True},
                "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
                "norm": {"type": "categorical", "choices": ["batch", "none"]},
            }
        }
    )
    study = optuna.create_study()
    trial = study.ask()
    space.define_by_run(trial)
    d = trial.distributions
    D = optuna.distributions
    assert d["depth"] == D.IntDistribution(2, 6, step=2)
    assert d["width"] == D.IntDistribution(8, 64, log=True)
    assert d["lr"] == D.FloatDistribution(1e-4, 1e-2, log=True)
    assert d["dropout"] == D.FloatDistribution(0.0, 0.5, step=0.1)
    assert d["norm"] == D.CategoricalDistribution(["batch", "none"])


def test_exponent_floats_without_a_dot_are_floats(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("params:\n  lr: {type: float, low: 1e-4, high: 1e-2, log: true}\n")
    (lr,) = load_space(f).params
    assert (lr.low, lr.high) == (1e-4, 1e-2)


def test_an_int_on_a_log_scale_may_say_step_1(tmp_path: Path) -> None:
    """As Optuna's suggest_int(..., step=1, log=True), which it allows."""
    import optuna

    f = tmp_path / "s.yaml"
    f.write_text(
        "params:\n  model: cnn\n  width: {type: int, low: 8, high: 64, log: true, step: 1}\n"
    )
    space = load_space(f)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    space.define_by_run(trial)
    assert trial.distributions["width"] == optuna.distributions.IntDistribution(8, 64, log=True)


def test_param_spec_checks_itself_and_is_frozen() -> None:
    with pytest.raises(SpaceError, match=r"params\.lr: low must be <= high"):
        ParamSpec(name="lr", type="float", low=0.1, high=0.01)
    spec = ParamSpec(name="lr", type="float", low=0.01, high=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.low = 0.0  # type: ignore[misc]


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SpaceError) as e:
        load_space(tmp_path / "x.yaml")
    assert str(e.value) == f"space file {str(tmp_path / 'x.yaml')!r} does not exist."


# ---------------------------------------------------------------- bad inputs

LR = "lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}"
MODEL = "model: {type: categorical, choices: [cnn_seed, cnn]}"
DEPTH = "depth: {type: int, low: 2, high: 5, when: {model: cnn}}"

# (id, params block or whole file, substrings the one-line message must contain)
BAD = [
    ("top_key", "parms:\n  lr: 0.001\n", ["parms", "Did you mean 'params'"]),
    ("run_key", f"run: {{fold: 3}}\nparams: {{{LR}}}", ["run.fold", "Did you mean 'folds'"]),
    ("run_value", f"run: {{folds: 1}}\nparams: {{{LR}}}", ["run.folds", "folds=1"]),
    ("run_type", f"run: {{folds: five}}\nparams: {{{LR}}}", ["run.folds", "'five'"]),
    ("run_scheduler", f"run: {{scheduler: ashaa}}\nparams: {{{LR}}}", ["run.scheduler", "'ashaa'"]),
    ("run_not_mapping", f"run: [1]\nparams: {{{LR}}}", ["run", "[1]"]),
    ("params_missing", "run: {folds: 3}\n", ["'params' is missing"]),
    ("param_name", "params: {lrr: 0.001}", ["params.lrr", "'lrr'", "Did you mean 'lr'"]),
    (
        "field",
        "params: {lr: {type: float, low: 0.1, hgh: 1.0}}",
        ["params.lr", "'hgh'", "Did you mean 'high'"],
    ),
    (
        "type",
        "params: {lr: {type: flaot, low: 0.1, high: 1.0}}",
        ["params.lr", "'flaot'", "Did you mean 'float'"],
    ),
    ("type_missing", "params: {lr: {low: 0.1, high: 1.0}}", ["params.lr", "'type' is missing"]),
    ("low_missing", "params: {lr: {type: float, high: 1.0}}", ["params.lr", "'low' is missing"]),
    ("high_missing", "params: {depth: {type: int, low: 1}}", ["params.depth", "'high' is missing"]),
    (
        "low_gt_high",
        "params: {lr: {type: float, low: 0.1, high: 0.01}}",
        ["params.lr: low must be <= high, but got low=0.1, high=0.01."],
    ),
    (
        "log_nonpositive",
        "params: {lr: {type: float, low: 0.0, high: 0.01, log: true}}",
        ["params.lr", "low=0.0", "log"],
    ),
    (
        "log_and_step",
        "params: {lr: {type: float, low: 0.001, high: 0.01, log: true, step: 0.001}}",
        ["params.lr", "step=0.001", "log=True"],
    ),
    (
        "int_log_and_step",
        "params: {width: {type: int, low: 8, high: 64, log: true, step: 2}}",
        ["params.width", "for a step other than 1", "step=2", "log=True"],
    ),
    ("log_not_bool", "params: {lr: {type: float, low: 0.001, high: 0.01, log: 2}}", ["log=2"]),
    ("int_bound", "params: {depth: {type: int, low: 2.5, high: 5}}", ["params.depth", "low=2.5"]),
    ("int_step", "params: {depth: {type: int, low: 2, high: 6, step: 0.5}}", ["step=0.5"]),
    ("bound_type", "params: {lr: {type: float, low: small, high: 0.1}}", ["params.lr", "'small'"]),
    (
        "step_grid",
        "params: {width: {type: int, low: 16, high: 70, step: 16}}",
        ["params.width", "high=70", "step=16"],
    ),
    ("step_zero", "params: {dropout: {type: float, low: 0, high: 0.5, step: 0}}", ["step=0"]),
    ("choices_empty", "params: {model: {type: categorical, choices: []}}", ["params.model", "[]"]),
    (
        "choices_field_of_float",
        "params: {lr: {type: float, low: 0.1, high: 1.0, choices: [1]}}",
        ["params.lr", "'choices'", "[1]"],
    ),
    (
        "choices_duplicate",
        "params: {batch_size: {type: categorical, choices: [32, 32]}}",
        ["params.batch_size", "[32, 32]"],
    ),
    (
        "model_choice",
        "params: {model: {type: categorical, choices: [cnn_seed, cnnn]}}",
        ["params.model", "'cnnn'", "Did you mean 'cnn'"],
    ),
    ("model_constant", "params: {model: cnn_sed}", ["params.model", "'cnn_sed'", "'cnn_seed'"]),
    ("model_as_int", "params: {model: {type: int, low: 0, high: 2}}", ["params.model", "'int'"]),
    (
        "optimizer_choice",
        "params: {optimizer: {type: categorical, choices: [adam, adamm]}}",
        ["params.optimizer", "'adamm'", "Did you mean 'adam'"],
    ),
    ("lr_schedule_constant", "params: {lr_schedule: cosin}", ["params.lr_schedule", "'cosin'"]),
    (
        "class_balance_choice",
        "params: {class_balance: {type: categorical, choices: [none, weighed]}}",
        ["params.class_balance", "'weighed'", "'weighted'"],
    ),
    ("family_constant", "params: {family: cnnn}", ["params.family", "'cnnn'"]),
    ("hflip_range", "params: {hflip: {type: float, low: 0.0, high: 1.5}}", ["params.hflip", "1.5"]),
    ("batch_size_float", "params: {batch_size: {type: float, low: 8, high: 64}}", ["batch_size"]),
    ("batch_size_constant", "params: {batch_size: 0}", ["params.batch_size", "batch_size=0"]),
    ("residual_type", "params: {residual: {type: categorical, choices: [1, 2]}}", ["residual=1"]),
    ("constant_list", "params: {batch_size: [32, 64]}", ["params.batch_size", "[32, 64]"]),
    ("when_later", f"params:\n  {DEPTH}\n  {MODEL}\n", ["params.depth.when.model", "above"]),
    (
        "when_unknown",
        f"params:\n  {MODEL}\n  depth: {{type: int, low: 2, high: 5, when: {{modl: cnn}}}}\n",
        ["params.depth.when.modl", "'modl'", "Did you mean 'model'"],
    ),
    (
        "when_first",
        "params:\n  depth: {type: int, low: 2, high: 5, when: {model: cnn}}\n",
        ["params.depth.when.model", "cnn"],
    ),
    (
        "when_value",
        f"params:\n  {MODEL}\n  depth: {{type: int, low: 2, high: 5, when: {{model: cnn_tiny}}}}\n",
        ["params.depth.when.model", "'cnn_tiny'"],
    ),
    (
        "when_model_lacks_param",
        "params:\n  model: {type: categorical, choices: [cnn, cnn_seed]}\n"
        "  depth: {type: int, low: 2, high: 5, when: {model: [cnn, cnn_seed]}}\n",
        ["params.depth.when.model", "'cnn_seed'", "'depth'"],
    ),
    (
        "when_not_mapping",
        f"params:\n  {MODEL}\n  width: {{type: int, low: 8, high: 9, when: cnn}}\n",
        ["when='cnn'"],
    ),
    (
        "enqueue_key",
        f"params: {{{LR}}}\nenqueue: [{{lrr: 0.001}}]",
        ["enqueue[0].lrr", "'lrr'", "Did you mean 'lr'"],
    ),
    ("enqueue_range", f"params: {{{LR}}}\nenqueue: [{{lr: 0.5}}]", ["enqueue[0].lr", "lr=0.5"]),
    (
        "enqueue_choice",
        f"params: {{{MODEL}}}\nenqueue: [{{model: cnn_tiny}}]",
        ["enqueue[0].model", "'cnn_tiny'"],
    ),
    (
        "enqueue_typo",
        f"params: {{{MODEL}}}\nenqueue: [{{model: cnn_sed}}]",
        ["enqueue[0].model", "'cnn_sed'", "Did you mean 'cnn_seed'"],
    ),
    (
        "enqueue_int",
        f"params:\n  {MODEL}\n  {DEPTH}\nenqueue: [{{depth: 2.5}}]",
        ["enqueue[0].depth", "depth=2.5"],
    ),
    (
        "enqueue_condition",
        f"params:\n  {MODEL}\n  {DEPTH}\nenqueue: [{{model: cnn_seed, depth: 3}}]",
        ["enqueue[0].depth", "model='cnn_seed'"],
    ),
    (
        "enqueue_constant",
        "params: {batch_size: 64}\nenqueue: [{batch_size: 32}]",
        ["batch_size=32"],
    ),
    ("enqueue_not_list", f"params: {{{LR}}}\nenqueue: {{lr: 0.001}}", ["enqueue", "{'lr': 0.001}"]),
    ("enqueue_item", f"params: {{{LR}}}\nenqueue: [0.001]", ["enqueue[0]", "0.001"]),
    ("duplicate_key", f"params:\n  {LR}\n  {LR}\n", ["duplicate key 'lr'", "line 3"]),
    ("yaml_syntax", "params: {lr: [1, 2}\n", ["not valid YAML", "line 1"]),
    ("not_mapping", "- lr\n- depth\n", ["must be a mapping", "list"]),
    ("empty_file", "", ["must be a mapping", "empty"]),
]


@pytest.mark.parametrize(("text", "needles"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_space_raises_one_line(tmp_path: Path, text: str, needles: list[str]) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(SpaceError) as e:
        load_space(f)
    msg = str(e.value)
    assert msg.startswith(f"space file {str(f)!r}"), msg
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_parse_space_names_its_source() -> None:
    with pytest.raises(SpaceError, match=r"^<dict>: params\.lrr: Unknown hyperparameter 'lrr'"):
        parse_space({"params": {"lrr": 0.1}})
    with pytest.raises(SpaceError, match=r"^x\.yaml: params\.lr: low must be <= high"):
        parse_space({"params": {"lr": {"type": "float", "low": 1, "high": 0}}}, source="x.yaml")


def test_to_dict_round_trips_the_shipped_spaces() -> None:
    paths = sorted(SPACES.glob("*.yaml"))
    assert {p.stem for p in paths} == {"cnn", "autoencoder", "gan", "all"}
    for path in paths:
        space = load_space(path)
        again = parse_space(space.to_dict())
        assert again.params == space.params, path
        assert again.run == space.run and again.enqueue == space.enqueue


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"ae_lr": {"type": "float", "low": -1.0, "high": 1.0}}, r"params\.ae_lr\.low: ae_lr"),
        ({"ae_mode": {"type": "categorical", "choices": ["classifier", "anomly"]}}, r"ae_mode"),
        ({"gan_mode": "augmnt"}, r"params\.gan_mode: .*gan_mode"),
        ({"synthetic_ratio": {"type": "float", "low": -1.0, "high": 1.0}}, r"low: synthetic_ratio"),
    ],
)
def test_family_params_are_checked_when_the_space_loads(entry: dict, match: str) -> None:
    """A bad family value stops the space file, not a trial in the middle of a search."""
    with pytest.raises(SpaceError, match=match):
        parse_space({"params": {"family": "autoencoder", **entry}})


def test_good_family_params_load() -> None:
    space = parse_space(
        {
            "params": {
                "family": {"type": "categorical", "choices": ["autoencoder", "gan"]},
                "ae_lr": {
                    "type": "float",
                    "low": 1e-4,
                    "high": 1e-2,
                    "log": True,
                    "when": {"family": "autoencoder"},
                },
                "gan_mode": {
                    "type": "categorical",
                    "choices": ["augment", "disc_features"],
                    "when": {"family": "gan"},
                },
            }
        }
    )
    assert {p.name for p in space.params} == {"family", "ae_lr", "gan_mode"}


def test_mixup_is_searchable_and_its_range_is_checked() -> None:
    space = parse_space({"params": {"mixup": {"type": "categorical", "choices": [0.0, 0.2]}}})
    assert "mixup" in space.param_names()
    assert TrialConfig.from_params({"mixup": 0.2}).mixup == 0.2
    with pytest.raises(SpaceError, match=r"mixup must be >= 0 \(0: off\), but got mixup=-0.1"):
        parse_space({"params": {"mixup": {"type": "float", "low": -0.1, "high": 0.4}}})


def test_cutout_and_sam_are_searchable_and_their_ranges_are_checked() -> None:
    space = parse_space(
        {
            "params": {
                "cutout": {"type": "float", "low": 0.0, "high": 0.5},
                "sam": {"type": "categorical", "choices": [0.0, 0.05]},
            }
        }
    )
    assert {"cutout", "sam"} <= set(space.param_names())
    cfg = TrialConfig.from_params({"cutout": 0.3, "sam": 0.05})
    assert (cfg.augment.cutout, cfg.sam) == (0.3, 0.05)
    with pytest.raises(SpaceError, match=r"params\.cutout\.high: cutout must be .*cutout=1\.5"):
        parse_space({"params": {"cutout": {"type": "float", "low": 0.0, "high": 1.5}}})
    with pytest.raises(SpaceError, match=r"sam must be >= 0 \(0: off\), but got sam=-0\.1"):
        parse_space({"params": {"sam": {"type": "categorical", "choices": [-0.1, 0.05]}}})
    with pytest.raises(SpaceError, match=r"Did you mean 'cutout'"):
        parse_space({"params": {"cutuot": 0.2}})


def test_a_swapped_pair_of_letters_is_one_typo() -> None:
    """difflib alone scores 'low' and 'log' alike for 'lgo'; one swap makes it 'log'."""
    from raydx.lookup import suggest, typo_distance

    with pytest.raises(SpaceError, match=r"'lgo'\. Did you mean 'log'\?"):
        parse_space({"params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "lgo": True}}})
    assert suggest("lgo", ["low", "log", "high"]) == "log"
    assert suggest("optimzer", ["optimizer", "lr"]) == "optimizer"
    assert suggest("zzz", ["low", "log"]) is None
    pairs = [("lgo", "log"), ("lgo", "low"), ("", "ab"), ("adam", "adam")]
    assert [typo_distance(a, b) for a, b in pairs] == [1, 2, 2, 0]


# ---------------------------------------------------------------- what each param reaches

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
INT = {"type": "int", "low": 2, "high": 4}
HEAD = {"type": "categorical", "choices": ["dense", "gap"]}
MODELS = {"type": "categorical", "choices": ["cnn_seed", "cnn"]}
CNN = {"family": "cnn"}  # run: the family a trial of a file that names none gets


def _parse_error(space: dict) -> str:
    with pytest.raises(SpaceError) as e:
        parse_space(space)
    return str(e.value)


@pytest.mark.parametrize("name", ["cnn", "autoencoder", "gan", "all"])
def test_every_shipped_space_passes_the_branch_checks(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        space = load_space(SPACES / f"{name}.yaml")
    # and so does the space as `raydx tune` runs it, with its family made explicit
    family = dict(space.run).get("family", RunOptions.family)
    assert space.with_default("family", family).param_names()[0] in ("family", "model")


def test_a_searched_architecture_without_its_model_fails_when_read() -> None:
    """The cnn family's default model is cnn_seed, which takes none of them: every trial
    trained cnn_seed with the searched values dropped."""
    msg = _parse_error(
        {"run": {"family": "cnn"}, "params": {"depth": INT, "width": INT, "head": HEAD}}
    )
    assert msg == (
        "<dict>: params.depth: depth is not a parameter of model 'cnn_seed' (family 'cnn'); "
        "models that take it: cnn, conv_ae. Trials of the branch family='cnn', "
        "model='cnn_seed' would search it and leave it out: add `model: cnn` above it."
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"model": "cnn_seed", "width": INT},
            "params.width: width is not a parameter of model 'cnn_seed' (family 'cnn')",
        ),
        (
            {"model": MODELS, "depth": INT},  # the cnn_seed branch drops it
            "params.depth: depth is not a parameter of model 'cnn_seed'",
        ),
        (
            {"family": "autoencoder", "model": "conv_ae_tiny", "latent_size": 64},
            "params.latent_size: latent_size is not a parameter of model 'conv_ae_tiny' "
            "(family 'autoencoder'); models that take it: conv_ae. Trials of the branch "
            "family='autoencoder', model='conv_ae_tiny' would search it and leave it out: "
            "set `model: conv_ae`.",
        ),
        (
            {"family": "cnn", "ae_lr": {"type": "float", "low": 1e-4, "high": 1e-2}},
            "params.ae_lr: ae_lr is not a parameter of family 'cnn' (model 'cnn_seed'); "
            "families that take it: autoencoder. Trials of the branch family='cnn', "
            "model='cnn_seed' would search it and leave it out: set `family: autoencoder`.",
        ),
        (  # of the families that take it, the condition names those the file searches
            {"family": {"type": "categorical", "choices": ["cnn", "gan"]}, "latent_size": 16},
            "params.latent_size: latent_size is not a parameter of model 'cnn_seed' (family "
            "'cnn'); models that take it: conv_ae. Trials of the branch family='cnn', "
            "model='cnn_seed' would search it and leave it out: condition it with "
            "`when: {family: gan}`.",
        ),
        (  # a model choice: the condition on it keeps the param's other conditions
            {
                "family": {"type": "categorical", "choices": ["cnn", "autoencoder"]},
                "model": {**MODELS, "when": {"family": "cnn"}},
                "depth": {**INT, "when": {"family": ["cnn", "autoencoder"]}},
            },
            "params.depth: depth is not a parameter of model 'cnn_seed' (family 'cnn'); "
            "models that take it: cnn, conv_ae. Trials of the branch family='cnn', "
            "model='cnn_seed' would search it and leave it out: condition it with "
            "`when: {family: [cnn, autoencoder], model: cnn}`.",
        ),
        (  # a model choice without a model that takes it
            {"model": {"type": "categorical", "choices": ["cnn_seed", "cnn_tiny"]}, "depth": INT},
            "would search it and leave it out: add cnn to the choices of params.model, and "
            "condition it with `when: {model: cnn}`.",
        ),
        (  # a numeric condition: batch_size 64 leaves model out, so cnn_seed gets depth
            {
                "batch_size": {"type": "int", "low": 32, "high": 64, "step": 32},
                "model": {"type": "fixed", "value": "cnn", "when": {"batch_size": 32}},
                "depth": INT,
            },
            "params.depth: depth is not a parameter of model 'cnn_seed'",
        ),
    ],
)
def test_a_param_that_a_branch_would_drop_fails_when_read(params: dict, message: str) -> None:
    assert message in _parse_error({"run": CNN, "params": params})


@pytest.mark.parametrize(
    "params",
    [
        {"model": "cnn", "depth": INT, "head": HEAD},
        {"model": MODELS, "depth": {**INT, "when": {"model": "cnn"}}},
        {"family": "autoencoder", "latent_size": 64},  # the family's default, conv_ae
        {"family": "gan", "model": "cnn_seed", "latent_size": 16},  # the GAN's, a family param
        {"family": "gan", "gan_mode": "disc_features", "dropout": 0.2},
        {
            "batch_size": {"type": "int", "low": 32, "high": 64, "step": 32},
            "model": {"type": "fixed", "value": "cnn", "when": {"batch_size": 32}},
            "depth": {**INT, "when": {"batch_size": 32}},
        },
        {
            "family": {"type": "categorical", "choices": ["cnn", "autoencoder"]},
            "model": {"type": "categorical", "choices": ["cnn"], "when": {"family": "cnn"}},
            "depth": INT,  # cnn's and conv_ae's (the autoencoder family's default)
            "ae_lr": {
                "type": "float",
                "low": 1e-4,
                "high": 1e-2,
                "when": {"family": "autoencoder"},
            },
        },
    ],
)
def test_params_every_branch_takes_load(params: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        space = parse_space({"run": CNN, "params": params})
    assert space.param_names() == list(params)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"family": "cnn", "model": "conv_ae"},
            "params.model: model must be a model of family 'cnn' (cnn, cnn_seed, cnn_tiny; "
            "cnn_seed when none is named), but got model='conv_ae', a model of family "
            "'autoencoder'. Set `family: autoencoder`, or condition it with "
            "`when: {family: autoencoder}`.",
        ),
        (
            {"family": "cnn", "model": "dcgan"},
            "params.model: model must be a model of family 'cnn' (cnn, cnn_seed, cnn_tiny; "
            "cnn_seed when none is named), but got model='dcgan', which no family takes as "
            "its model.",
        ),
        (
            {"family": "autoencoder", "model": "cnn_seed"},
            "params.model: model must be a model of family 'autoencoder' (conv_ae, "
            "conv_ae_tiny; conv_ae when none is named), but got model='cnn_seed'",
        ),
        (
            {"family": {"type": "categorical", "choices": ["cnn", "autoencoder"]}, "model": MODELS},
            "params.model: model must be a model of family 'autoencoder'",
        ),
    ],
)
def test_a_model_of_another_family_fails_when_read(params: dict, message: str) -> None:
    assert message in _parse_error({"params": params})  # each names its family


def test_a_family_from_the_command_line_is_checked_against_the_file() -> None:
    space = load_space(SPACES / "cnn.yaml")  # model: cnn
    with pytest.raises(SpaceError) as e:
        space.with_default("family", "autoencoder")
    assert str(e.value).startswith(
        f"space file {str(SPACES / 'cnn.yaml')!r}, with family='autoencoder': params.model: "
        "model must be a model of family 'autoencoder'"
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"model": "cnn", "depth": {"type": "int", "low": 2, "high": 8}},
            "<dict>: params.depth.high: model 'cnn': depth must be in [1, 6], but got depth=8.",
        ),
        (
            {"model": "cnn", "norm": {"type": "categorical", "choices": ["batch", "layer"]}},
            "<dict>: params.norm.choices: model 'cnn': Unknown norm 'layer'.",
        ),
        (
            {"model": "cnn", "dropout": 1.0},
            "<dict>: params.dropout: model 'cnn': dropout must be in [0, 1), but got dropout=1.0.",
        ),
        (
            {"family": "autoencoder", "depth": {"type": "int", "low": 2, "high": 5}},
            "<dict>: params.depth.high: model 'conv_ae': depth must be in [1, 4], but got depth=5.",
        ),
        (  # inside the range: every value of a short int range is built
            {"model": "cnn", "kernel_size": {"type": "int", "low": 3, "high": 5}},
            "<dict>: params.kernel_size: model 'cnn': kernel_size must be odd",
        ),
        (  # fine for cnn (up to 6), not for the autoencoder family's conv_ae (up to 4)
            {
                "family": {"type": "categorical", "choices": ["cnn", "autoencoder"]},
                "model": {"type": "fixed", "value": "cnn", "when": {"family": "cnn"}},
                "depth": {"type": "int", "low": 2, "high": 6, "step": 2},
            },
            "<dict>: params.depth.high: model 'conv_ae': depth must be in [1, 4], but got depth=6.",
        ),
        (  # a family param that the GAN is built with (the diagnosis model in disc_features)
            {
                "family": "gan",
                "gan_mode": {"type": "categorical", "choices": ["augment", "disc_features"]},
                "latent_size": {"type": "int", "low": 16, "high": 2048},
            },
            "<dict>: params.latent_size.high: model 'dcgan': latent_size must be in [1, 1024]",
        ),
        (
            {"optimizer": "sgd", "momentum": {"type": "float", "low": 0.5, "high": 1.0}},
            "<dict>: params.momentum.high: momentum must be in [0, 1), but got momentum=1.0.",
        ),
        (
            {"weight_decay": {"type": "float", "low": -1e-3, "high": 1e-3}},
            "<dict>: params.weight_decay.low: weight_decay must be a finite number >= 0, but got "
            "weight_decay=-0.001.",
        ),
        (
            {"contrast": {"type": "float", "low": 0.0, "high": 1.5}},
            "<dict>: params.contrast.high: contrast must be in [0, 1)",
        ),
        (
            {"brightness": 2.0},
            "<dict>: params.brightness: brightness must be a shift in [0, 1]",
        ),
    ],
)
def test_values_a_trial_would_reject_fail_when_read(params: dict, message: str) -> None:
    msg = _parse_error({"run": CNN, "params": params})
    assert msg.startswith(message), msg


@pytest.mark.slow
def test_checking_the_shipped_spaces_builds_no_weights() -> None:
    """Models are built on the meta device without filling weights: torch's meta
    ``normal_`` would import torch._dynamo, seconds on the driver."""
    code = (
        "import sys, time; from pathlib import Path; import raydx.models\n"
        "from raydx.space import load_space\n"
        "t = time.perf_counter()\n"
        f"for f in sorted(Path({str(SPACES)!r}).glob('*.yaml')): load_space(f)\n"
        "print(time.perf_counter() - t, 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[1] == "False", out


def test_a_misspelt_run_family_fails_when_read() -> None:
    msg = _parse_error({"run": {"family": "autoencodr"}, "params": {"lr": 0.001}})
    assert msg.startswith("<dict>: run.family: Unknown family 'autoencodr'. Did you mean "), msg


# ---------------------------------------------------------------- the GAN's own model


def test_a_gan_size_param_its_gan_model_does_not_take_fails_when_read() -> None:
    """g_width is passed to the GAN only where gan_model declares it: with dcgan_tiny every
    trial searched it and left it out."""
    msg = _parse_error({"params": {"family": "gan", "gan_model": "dcgan_tiny", "g_width": INT}})
    assert msg == (
        "<dict>: params.g_width: g_width is not a parameter of gan_model 'dcgan_tiny' "
        "(family 'gan'), which is built with it only where it declares it; gan_models that "
        "take it: dcgan. Trials of the branch family='gan', model='cnn_seed', "
        "gan_model='dcgan_tiny' would search it and leave it out: set `gan_model: dcgan`."
    )
    choice = {"type": "categorical", "choices": ["dcgan", "dcgan_tiny"]}
    msg = _parse_error({"params": {"family": "gan", "gan_model": choice, "d_width": INT}})
    assert msg.endswith("leave it out: condition it with `when: {gan_model: dcgan}`."), msg
    parse_space(  # the fix
        {
            "params": {
                "family": "gan",
                "gan_model": choice,
                "d_width": {**INT, "when": {"gan_model": "dcgan"}},
                "latent_size": {
                    "type": "int",
                    "low": 8,
                    "high": 16,
                    "when": {"gan_model": "dcgan"},
                },
                "g_lr": {"type": "float", "low": 1e-4, "high": 1e-3},  # every GAN's
            }
        }
    )


# ---------------------------------------------------------------- a file without a family


def test_a_file_that_names_no_family_is_checked_with_the_family_the_run_gives_it() -> None:
    """`raydx tune --family autoencoder` applies the family after the file is read: the
    family-dependent checks wait for it (``with_default``)."""
    space = parse_space(
        {"params": {"ae_mode": "anomaly", "denoise": {"type": "float", "low": 0.0, "high": 0.2}}}
    )
    assert space.with_default("family", "autoencoder").param_names()[0] == "family"
    with pytest.raises(SpaceError) as e:
        space.with_default("family", "cnn")
    assert str(e.value).startswith(
        "the space, with family='cnn': params.ae_mode: ae_mode is not a parameter of family "
        "'cnn' (model 'cnn_seed'); families that take it: autoencoder."
    ), str(e.value)
    model = parse_space({"params": {"model": "conv_ae"}})
    model.with_default("family", "autoencoder")
    with pytest.raises(SpaceError, match=r"params\.model: model must be a model of family 'cnn'"):
        model.with_default("family", "cnn")
    with pytest.raises(SpaceError, match=r"params\.ae_mode"):  # a family in the file: at once
        parse_space({"run": CNN, "params": {"ae_mode": "anomaly"}})


# ---------------------------------------------------------------- records of earlier runs

# Searched under cnn_seed (left out before the branch check) and with the autoencoder
# family's cnn_seed (once swapped for conv_ae): what an older raydx saved as space.yaml.
OLD_SPACE = """run: {family: cnn}
params:
  family: {type: categorical, choices: [cnn, autoencoder]}
  model: {type: categorical, choices: [cnn_seed, cnn]}
  depth: {type: int, low: 2, high: 4}
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
"""


def test_an_earlier_runs_space_loads_with_one_warning_per_parameter(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(OLD_SPACE)
    with pytest.raises(SpaceError, match=r"params\.depth: depth is not a parameter of"):
        load_space(path)  # a new space file stays strict
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        space = load_space(path, strict=False)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages  # depth, in 2 branches; model, in 2 branches
    where = f"space file {str(path)!r}: "
    assert messages[0].startswith(
        where + "params.depth: depth is not a parameter of model 'cnn_seed' (family 'cnn')"
    ), messages
    assert messages[1].startswith(
        where + "params.model: model must be a model of family 'autoencoder'"
    ), messages
    assert all("Read as a warning: the space is a record of an earlier run" in m for m in messages)
    with pytest.warns(UserWarning):  # on every read
        assert not space.strict and space == load_space(path, strict=False)
    assert space.param_names() == ["family", "model", "depth", "lr"]


def test_an_earlier_runs_space_without_a_family_warns_when_the_run_gives_it_one() -> None:
    space = parse_space({"params": {"depth": INT}}, strict=False)
    with pytest.warns(UserWarning, match=r"^the space, with family='cnn': params.depth: "):
        space = space.with_default("family", "cnn")
    assert space.param_names() == ["family", "depth"] and not space.strict


def test_resume_reads_the_runs_own_space_loosely(tmp_path: Path, monkeypatch) -> None:
    """Up to the data: the old space no longer stops `raydx tune --resume`."""
    import json

    import raydx.run

    class Reached(Exception):
        pass

    def stop(*_a: object, **_k: object) -> None:
        raise Reached

    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"options": {"data": "synthetic"}}))
    (out / raydx.run.SPACE_COPY).write_text(OLD_SPACE)
    monkeypatch.setattr(raydx.run, "prepare", stop)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(Reached):
        warnings.simplefilter("always")
        raydx.run.resume(out, log=lambda _: None)
    assert [str(w.message).split(": ")[1] for w in caught] == ["params.depth", "params.model"]


def test_cv_of_a_runs_best_yaml_reads_it_loosely(tmp_path: Path, monkeypatch) -> None:
    """`raydx cv --config OLD/best.yaml` (the model card's command) warns; the same
    point in a file of one's own is refused."""
    import json

    import raydx.run

    monkeypatch.setattr(raydx.run, "tune", lambda space, **_: space)
    point = "params: {family: cnn, model: cnn_seed, depth: 3, lr: 0.001}\n"
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.yaml").write_text(point)
    (run / "run.json").write_text(json.dumps({"options": {"data": "synthetic", "seed": 0}}))
    with pytest.warns(UserWarning, match="params.depth: depth is not a parameter"):
        space = raydx.run.cross_validate(run / "best.yaml", log=lambda _: None)
    assert not space.strict
    own = tmp_path / "mine.yaml"
    own.write_text(point)
    with pytest.raises(SpaceError, match=r"params\.depth: depth is not a parameter"):
        raydx.run.cross_validate(own, log=lambda _: None)
    beside = run / "mine.yaml"  # a file of one's own in the run folder is not its record
    beside.write_text(point)
    with pytest.raises(SpaceError, match=r"params\.depth: depth is not a parameter"):
        raydx.run.cross_validate(beside, log=lambda _: None)
    best = run / "best.yaml"  # cnn_seed under the autoencoder family trained conv_ae
    best.write_text("params: {family: autoencoder, model: cnn_seed, lr: 0.001}\n")
    with pytest.warns(UserWarning, match="An earlier raydx trained conv_ae for it"):
        raydx.run.cross_validate(best, log=lambda _: None)


# ---------------------------------------------------------------- cost of the branch check


def _branchy() -> dict:
    """263 branches: three families, a model choice, and conditions on its params."""
    cat = lambda *c: {"type": "categorical", "choices": list(c)}  # noqa: E731
    return {
        "params": {
            "family": cat("cnn", "autoencoder", "gan"),
            "model": {**cat("cnn_seed", "cnn"), "when": {"family": ["cnn", "gan"]}},
            "gan_mode": {**cat("augment", "disc_features"), "when": {"family": "gan"}},
            "ae_mode": {**cat("classifier", "anomaly"), "when": {"family": "autoencoder"}},
            "ae_loss": {**cat("mse", "l1"), "when": {"family": "autoencoder"}},
            "head": {**cat("dense", "gap"), "when": {"model": "cnn"}},
            "norm": {**cat("batch", "none"), "when": {"model": "cnn"}},
            "residual": {**cat(False, True), "when": {"model": "cnn"}},
            "convs_per_stage": {"type": "int", "low": 1, "high": 2, "when": {"model": "cnn"}},
            "dense_units": {**cat(64, 128, 256), "when": {"head": "dense", "residual": False}},
            "depth": {"type": "int", "low": 2, "high": 6, "when": {"model": "cnn"}},
            "width": {"type": "int", "low": 8, "high": 64, "step": 8, "when": {"model": "cnn"}},
            "kernel_size": {**cat(3, 5, 7), "when": {"convs_per_stage": 2}},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5, "unless": {"ae_mode": "anomaly"}},
            "optimizer": {**cat("adam", "adamw", "sgd"), "unless": {"ae_mode": "anomaly"}},
            "lr_schedule": {**cat("none", "onecycle", "cosine"), "unless": {"ae_mode": "anomaly"}},
            "momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"optimizer": "sgd"}},
            "class_balance": {
                **cat("none", "weighted", "sampler"),
                "unless": {"ae_mode": "anomaly"},
            },
            "hflip": {"type": "float", "low": 0.0, "high": 0.5, "when": {"class_balance": "none"}},
        }
    }


def test_each_value_of_a_branchy_space_is_built_once_per_model(monkeypatch) -> None:
    """Keyed on (family, model, the branch's other model and family values, the value),
    not on the whole branch (its training values): the 279 branches of its first version once
    cost 6,048 configurations (about 3 s); now 672 (about 0.5 s)."""
    import raydx.space as S

    branches, complete = S._branches(S._parse_params(_branchy()["params"]))
    assert len(branches) == 263 and complete
    calls = []
    real = TrialConfig.from_params.__func__  # type: ignore[attr-defined]

    def counting(cls: type, params: dict) -> TrialConfig:
        calls.append(params)
        return real(cls, params)

    monkeypatch.setattr(TrialConfig, "from_params", classmethod(counting))
    parse_space(_branchy())
    assert 0 < len(calls) <= 700, len(calls)


def test_a_space_past_the_branch_limit_says_so(monkeypatch) -> None:
    import raydx.space as S

    space = {"run": CNN, "params": {"optimizer": {"type": "categorical", "choices": OPTS}}}
    space["params"]["lr"] = {
        "type": "float",
        "low": 1e-4,
        "high": 1e-2,
        "when": {"optimizer": "sgd"},
    }
    monkeypatch.setattr(S, "MAX_BRANCHES", 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 3 branches: all checked
        parse_space(space)
    monkeypatch.setattr(S, "MAX_BRANCHES", 2)
    with pytest.warns(UserWarning, match=r"more than 2 branches .* only the first 2 are checked"):
        parse_space(space)


OPTS = ["adam", "adamw", "sgd"]


def test_an_earlier_runs_value_its_model_refuses_is_a_warning() -> None:
    """Its trials failed at that value then, and will again; the rest still resume."""
    params = {"model": "cnn", "depth": {"type": "int", "low": 2, "high": 8}}
    with pytest.warns(UserWarning, match=r"params\.depth\.high: model 'cnn': depth must be in"):
        parse_space({"run": CNN, "params": params}, strict=False)
    with pytest.raises(SpaceError, match=r"params\.depth\.high: model 'cnn': depth must be in"):
        parse_space({"run": CNN, "params": params})


def test_a_value_that_fails_only_with_another_branch_value_is_caught() -> None:
    # instance norm needs a 2x2 code map: at 16 px it fails with depth 4, not depth 2;
    # the branches hold both depths because a `when` reads depth.
    space = {
        "run": {"family": "autoencoder", "image_size": 16},
        "params": {
            "depth": {"type": "categorical", "choices": [2, 4]},
            "norm": {"type": "categorical", "choices": ["batch", "instance"]},
            "dropout": {"type": "float", "low": 0.0, "high": 0.3, "when": {"depth": [4]}},
        },
    }
    with pytest.raises(SpaceError, match="norm='instance' needs a code map"):
        parse_space(space)


@pytest.mark.parametrize("name", ["cnn", "autoencoder", "gan", "all"])
def test_shipped_enqueued_points_check_clean_with_the_spaces_constants(name: str) -> None:
    """A point names what is searched; its trial also gets the space's constants
    (family, model): checked without them, autoencoder.yaml's point read as a cnn one
    and warned that its parameters were left out."""
    import warnings

    space = load_space(SPACES / f"{name}.yaml")
    for point in space.enqueue_points():
        full = space.with_constants(point)
        assert space.sample(optuna.trial.FixedTrial(full)) == full
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            TrialConfig.from_params(full)


def test_a_space_is_checked_against_the_data_before_ray_starts() -> None:
    """autoencoder.yaml's point checks clean (it gets the family and model constants);
    on three classes, a space that offers the anomaly mode is noted; a point value that a
    constant's condition leaves out is warned about, not dropped silently."""
    import dataclasses
    import warnings

    import numpy as np

    from raydx.data.synthetic import make_synthetic
    from raydx.prepare import _checked_against_space

    binary = make_synthetic(30, seed=0)
    three = dataclasses.replace(binary, labels=np.arange(30) % 3, class_names=("a", "b", "c"))
    ae = load_space(SPACES / "autoencoder.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _checked_against_space(ae, binary) is binary
        noted = _checked_against_space(ae, three).info["notes"]
    assert any("ae_mode 'anomaly', which needs a binary task" in n for n in noted)
    assert _checked_against_space(load_space(SPACES / "cnn.yaml"), three) is three
    raw = {
        "params": {
            "family": "cnn",
            "ae_mode": {
                "type": "categorical",
                "choices": ["classifier"],
                "when": {"family": ["autoencoder"]},
            },
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2},
        },
        "enqueue": [{"lr": 1e-3, "ae_mode": "classifier"}],
    }
    with pytest.warns(UserWarning, match=r"params ae_mode: never suggested"):
        space = parse_space(raw)
    with pytest.warns(UserWarning, match=r"enqueue\[0\]: ae_mode is not suggested for this point"):
        _checked_against_space(space, binary)


def test_a_param_whose_conditions_never_hold_is_warned_of() -> None:
    """An audit: ``lr`` ``when: {model: cnn_seed}`` beside the constant ``model: cnn``
    was accepted silently; no trial searched it, and no result recorded the lr used."""
    space = {
        "run": {"family": "cnn"},
        "params": {
            "model": "cnn",
            "depth": {"type": "int", "low": 2, "high": 3, "when": {"model": "cnn"}},
            "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "when": {"model": "cnn_seed"}},
            "noise": {"type": "float", "low": 0.0, "high": 0.1, "unless": {"model": "cnn"}},
        },
    }
    with pytest.warns(UserWarning, match=r"params lr, noise: never suggested, as their "):
        parsed = parse_space(space)
    assert {p.name for p in parsed.params} == {"model", "depth", "lr", "noise"}  # legal
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_space({**space, "params": {**space["params"], "lr": 0.001, "noise": 0.0}})


@pytest.mark.parametrize(
    ("params", "said"),
    [
        (
            {"optimizer": "adamw", "momentum": {"type": "float", "low": 0.8, "high": 0.99}},
            "momentum is used only where optimizer is sgd; trials where optimizer='adamw' "
            "would search it and leave it out: set `optimizer: sgd`, or remove",
        ),
        (  # the default optimizer (adam)
            {"momentum": {"type": "float", "low": 0.8, "high": 0.99}},
            "trials where optimizer='adam' (its default) would search it",
        ),
        (
            {
                "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
                "momentum": {"type": "float", "low": 0.8, "high": 0.99},
            },
            "condition it with `when: {optimizer: sgd}`, or remove params.momentum.",
        ),
        (
            {
                "model": "cnn",
                "head": {"type": "categorical", "choices": ["dense", "gap"]},
                "dense_units": {"type": "categorical", "choices": [64, 128]},
            },
            "dense_units is used only where head is dense; trials where head='gap' would",
        ),
    ],
)
def test_a_param_read_only_at_another_value_is_refused_where_searched_elsewhere(
    params, said
) -> None:
    """An audit: ``momentum`` searched beside a fixed adamw was reported as the winner's
    0.93, and ``dense_units`` recorded for ``head: gap`` trials, which ignore both."""
    with pytest.raises(SpaceError, match=re.escape(said)):
        parse_space({"run": {"family": "cnn"}, "params": params})
    ok = dict(params)
    name = next(iter(k for k in ("momentum", "dense_units") if k in ok))
    ok[name] = {
        **ok[name],
        "when": {"optimizer": "sgd"} if name == "momentum" else {"head": "dense"},
    }
    if name == "momentum":  # above it, as a condition reads values already suggested
        sgd = {"optimizer": {"type": "categorical", "choices": ["adam", "sgd"]}}
        ok = sgd | {k: v for k, v in ok.items() if k != "optimizer"}
    parse_space({"run": {"family": "cnn"}, "params": ok})  # conditioned: accepted
    # a constant is not searched: accepted beside any optimizer or head
    constant = (
        {"optimizer": "adam", "momentum": 0.9}
        if name == "momentum"
        else {"model": "cnn", "head": "gap", "dense_units": 128}
    )
    parse_space({"run": {"family": "cnn"}, "params": constant})
    one = {
        k: ({"type": "categorical", "choices": [v]} if k == name else v)
        for k, v in constant.items()
    }
    parse_space({"run": {"family": "cnn"}, "params": one})  # a choice of one: a constant too


@pytest.mark.parametrize("name", ["lr", "optimizer", "mixup", "hflip", "dropout"])
def test_a_classifier_setting_searched_for_an_anomaly_autoencoder_is_refused(name) -> None:
    """The anomaly-mode autoencoder learns with ae_lr, without augmentation, and trains
    no classifier: the shipped autoencoder.yaml searched ``dropout`` for those trials too,
    which recorded a value that nothing read."""
    domain = {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "optimizer": {"type": "categorical", "choices": ["adam", "adamw"]},
        "mixup": {"type": "float", "low": 0.0, "high": 0.4},
        "hflip": {"type": "float", "low": 0.0, "high": 0.5},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    }[name]
    base = {"family": "autoencoder", "model": "conv_ae"}
    fixed = {**base, "ae_mode": "anomaly", name: domain}
    said = f"{name} is not used where ae_mode is anomaly"
    with pytest.raises(SpaceError, match=re.escape(f"{said} (the autoencoder learns with")):
        parse_space({"params": fixed})
    with pytest.raises(SpaceError, match=r"leave it out: remove params\."):
        parse_space({"params": fixed})  # a fixed mode: nothing to condition on
    modes = {"type": "categorical", "choices": ["classifier", "anomaly"]}
    searched = {**base, "ae_mode": modes, name: domain}
    with pytest.raises(SpaceError, match=re.escape("`unless: {ae_mode: anomaly}`, or remove")):
        parse_space({"params": searched})
    below = {**base, name: domain, "ae_mode": modes}  # a review: the advice must work there
    with pytest.raises(SpaceError, match=re.escape("anomaly}` (with params.ae_mode above it)")):
        parse_space({"params": below})
    parse_space({"params": {**searched, name: {**domain, "unless": {"ae_mode": "anomaly"}}}})
    parse_space({"params": {**base, "ae_mode": "classifier", name: domain}})
    parse_space({"params": {**base, name: domain}})  # classifier: the family's default mode
    constant = {"lr": 0.001, "optimizer": "adam", "mixup": 0.0, "hflip": 0.0, "dropout": 0.0}
    parse_space({"params": {**base, "ae_mode": "anomaly", name: constant[name]}})


def test_a_never_suggested_param_is_warned_of_once_by_a_run(tmp_path: Path) -> None:
    """The space is read, then given the run's family (``with_default``), which checks
    its branches again: the warning came twice on the console."""
    space = tmp_path / "s.yaml"
    space.write_text(
        "run: {family: cnn}\nparams:\n  model: cnn\n"
        "  lr: {type: float, low: 1.0e-4, high: 1.0e-2, when: {model: cnn_seed}}\n"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_space(space).with_default("family", "cnn")
    assert [str(w.message).startswith("params lr: never suggested") for w in caught] == [True]
    space.write_text(space.read_text().replace("run: {family: cnn}\n", ""))  # no run.family
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_space(space).with_default("family", "cnn")
    assert [str(w.message).startswith("params lr: never suggested") for w in caught] == [True]


def test_a_step_too_small_for_its_range_is_refused() -> None:
    """An audit: step 1e-320 raised a raw OverflowError (an endless grid)."""
    message = _parse_error(
        {
            "run": CNN,
            "params": {"dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 1e-320}},
        }
    )
    assert (
        "params.dropout: step must leave a finite number of values between low and high" in message
    )
    assert "step=1e-320." in message
