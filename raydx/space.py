"""Search-space files: YAML at the edge, frozen dataclasses inside.

A space file is a one-to-one spelling of Optuna's define-by-run API: every ``params``
entry is one ``trial.suggest_int/float/categorical`` call (same argument names), made in
file order, or a constant. Everything is checked when the file is read, so a typo fails
in a second on the driver instead of in trial 7 on a worker; every message is one line
that names the file, the key and the offending value.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from raydx.config import (
    AUGMENT_PARAMS,
    CLASS_BALANCE,
    LR_SCHEDULES,
    OPTIMIZERS,
    SPACE_RUN_KEYS,
    AugmentConfig,
    RunOptions,
    TrialConfig,
)
from raydx.errors import RaydxError, SpaceError
from raydx.lookup import lookup

ParamType = Literal["int", "float", "categorical", "fixed"]

TOP_KEYS = ("run", "params", "enqueue")
TYPES = ("int", "float", "categorical", "fixed")
DIST_FIELDS = ("type", "low", "high", "step", "log", "choices", "value", "when", "unless")
# Fields each type takes besides ``type`` and ``when`` (Optuna's argument names).
TYPE_FIELDS: dict[str, tuple[str, ...]] = {
    "int": ("low", "high", "step", "log"),
    "float": ("low", "high", "step", "log"),
    "categorical": ("choices",),
    "fixed": ("value",),
}
# Hyperparameters whose values are names; the registry-backed ones are looked up lazily.
NAMED_OPTIONS: dict[str, tuple[str, ...]] = {
    "optimizer": OPTIMIZERS,
    "lr_schedule": LR_SCHEDULES,
    "class_balance": CLASS_BALANCE,
}
_SCALARS = (type(None), bool, int, float, str)  # Optuna's CategoricalChoiceType
_TYPE_WORDS = {
    type(None): "null",
    bool: "true or false",
    int: "an int",
    float: "a number",
    str: "a str",
}
_REL_TOL = 1e-9


@dataclass(frozen=True)
class ParamSpec:
    """One ``suggest_*`` call (or a constant), checked when made.

    ``when`` is a conjunction: the param is suggested only if every named earlier param
    has one of the listed values. ``unless`` is its counterpart: not suggested if any named
    earlier param has one of its listed values (one not suggested in the trial does not
    stop it), for what a conjunction of present values cannot say ("every family, but
    not the autoencoder's anomaly mode"). Messages start with ``params.<name>:``.
    """

    name: str
    type: ParamType
    low: int | float | None = None
    high: int | float | None = None
    step: int | float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    value: Any = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    unless: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def __post_init__(self) -> None:
        _check_spec(self)

    @property
    def key(self) -> str:
        return f"params.{self.name}"

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether ``when`` holds, and ``unless`` does not, given the values suggested so far."""
        return all(
            name in values and values[name] in allowed for name, allowed in self.when
        ) and not any(name in values and values[name] in barred for name, barred in self.unless)

    def suggest(self, trial: Any) -> Any:
        """The one Optuna call this entry stands for."""
        if self.type == "int":
            step = 1 if self.step is None else self.step
            return trial.suggest_int(self.name, self.low, self.high, step=step, log=self.log)
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        return self.value

    def contains(self, v: Any) -> bool:
        """Whether ``v`` is a value this entry can produce (for enqueued points)."""
        if self.type == "fixed":
            return _same(v, self.value)
        if self.type == "categorical":
            return any(_same(v, c) for c in self.choices)
        if not _is_number(v) or (self.type == "int" and not _is_int(v)):
            return False
        assert self.low is not None and self.high is not None
        if not self.low <= v <= self.high:
            return False
        return self.step is None or _on_grid(v - self.low, self.step)

    def describe(self) -> str:
        """The set of values, as a message shows it."""
        if self.type == "fixed":
            return f"the constant {self.value!r}"
        if self.type == "categorical":
            return f"one of {list(self.choices)!r}"
        grid = f" on a grid of step {self.step}" if self.step is not None else ""
        return f"{'an int' if self.type == 'int' else 'a float'} in [{self.low}, {self.high}]{grid}"


@dataclass(frozen=True)
class SearchSpace:
    """A parsed, checked space file; ``define_by_run`` is what Ray's ``OptunaSearch`` calls."""

    params: tuple[ParamSpec, ...]
    run: tuple[tuple[str, Any], ...] = ()
    enqueue: tuple[dict[str, Any], ...] = ()
    path: str | None = None
    # False: a record of an earlier run (its saved space, a best.yaml point), whose
    # branch-check findings are warnings (``parse_space``).
    strict: bool = field(default=True, compare=False)

    def define_by_run(self, trial: Any) -> dict[str, Any]:
        """Suggest every active param on ``trial``; return the active constants.

        Ray's ``OptunaSearch(space=...)`` merges the returned constants with the
        suggested values, so only the constants are returned.
        """
        values = self._walk(trial)
        return {
            p.name: values[p.name] for p in self.params if p.type == "fixed" and p.name in values
        }

    def sample(self, trial: Any) -> dict[str, Any]:
        """Suggested values and constants together, in file order (bare Optuna, tests)."""
        return self._walk(trial)

    def _walk(self, trial: Any) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                values[p.name] = p.suggest(trial)
        return values

    def run_defaults(self) -> dict[str, Any]:
        """The ``run:`` section, for ``RunOptions.replace(**...)`` (CLI flags override)."""
        return dict(self.run)

    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def param_values(self) -> dict[str, list[Any]]:
        """Values of each param's kind (its choices, its constant, its range's ends), for
        a results column that no trial fills to be of the type the others would be."""
        out: dict[str, list[Any]] = {}
        for p in self.params:
            if p.type == "categorical":
                out[p.name] = list(p.choices)
            elif p.type == "fixed":
                out[p.name] = [p.value]
            elif p.low is not None and p.high is not None:
                kind = int if p.type == "int" else float
                out[p.name] = [kind(p.low), kind(p.high)]
        return out

    @property
    def fixed(self) -> bool:
        """Nothing is searched: one configuration cross-validated (``raydx cv``)."""
        return all(p.type == "fixed" for p in self.params)

    def with_default(self, name: str, value: Any) -> SearchSpace:
        """This space with ``name`` fixed to ``value`` unless the file searches or sets it.

        Used for ``run.family``: every trial's configuration then names its family.
        """
        if name in self.param_names():
            return self
        spec = ParamSpec(name=name, type="fixed", value=value)
        where = f"space file {self.path!r}" if self.path else "the space"
        try:
            _check_known_values(spec)
            params = (spec, *self.params)
            # e.g. a --family the file's model is not of; the checks of a file that names
            # no family are made here, with the family the run gives it
            # (a file's run.family had its branches checked, and warned of, when read)
            findings = _check_branches(
                params, dict(self.run), self.strict, warn_never="family" not in dict(self.run)
            )
        except SpaceError as e:
            raise SpaceError(f"{where}, with {name}={value!r}: {e}") from None
        _warn(f"{where}, with {name}={value!r}", findings)
        return dataclasses.replace(self, params=params)

    def to_dict(self) -> dict[str, Any]:
        """The file form again (``parse_space(space.to_dict())`` gives an equal space)."""
        params: dict[str, Any] = {}
        for p in self.params:
            if p.type == "fixed" and not p.when and not p.unless:
                params[p.name] = p.value
                continue
            entry: dict[str, Any] = {"type": p.type}
            if p.type in ("int", "float"):
                entry |= {"low": p.low, "high": p.high}
                if p.step is not None:
                    entry["step"] = p.step
                if p.log:
                    entry["log"] = True
            elif p.type == "categorical":
                entry["choices"] = list(p.choices)
            else:
                entry["value"] = p.value
            if p.when:
                entry["when"] = {name: list(allowed) for name, allowed in p.when}
            if p.unless:
                entry["unless"] = {name: list(barred) for name, barred in p.unless}
            params[p.name] = entry
        out: dict[str, Any] = {"run": dict(self.run), "params": params}
        if self.enqueue:
            out["enqueue"] = [dict(point) for point in self.enqueue]
        return out

    def enqueue_points(self) -> list[dict[str, Any]]:
        """Points evaluated first (Tune ``points_to_evaluate`` wants a list); fresh copies."""
        return [dict(point) for point in self.enqueue]

    def with_constants(self, point: Mapping[str, Any]) -> dict[str, Any]:
        """An enqueued point as its trial's configuration: with the space's constants
        (``family``, ``model``, ...) where active, in file order, as a trial gets them."""
        values: dict[str, Any] = {}
        for p in self.params:
            if p.active(values) and (p.name in point or p.type == "fixed"):
                values[p.name] = point.get(p.name, p.value)
        return values


def load_space(path: str | Path, *, strict: bool = True) -> SearchSpace:
    """Read and check a space file (``strict``: see ``parse_space``)."""
    path = Path(path)
    where = f"space file {str(path)!r}"
    if not path.exists():
        raise SpaceError(f"{where} does not exist.")
    if not path.is_file():
        raise SpaceError(f"{where} is not a file.")
    data = read_yaml(path, where)
    return parse_space(data, source=where, path=str(path), strict=strict)


def read_yaml(path: Path, where: str) -> Any:
    """A YAML file as raydx reads its own: ``1e-4`` is a number, a key given twice is an
    error; a file that is not YAML is a ``SpaceError`` that names ``where``."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise SpaceError(f"{where} is not valid YAML: {_one_line(e.problem or e)}{at}.") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SpaceError(f"{where} is not valid YAML: {_one_line(e)}.") from None


def parse_space(
    data: Any, *, source: str = "<dict>", path: str | None = None, strict: bool = True
) -> SearchSpace:
    """Check ``data`` (a parsed space file) and build the space; errors name ``source``.

    ``strict=False`` reads a record of an earlier run (the space copy ``--resume``
    continues, a best.yaml that ``raydx cv --config`` re-checks), which an older raydx
    may have accepted: what the branch check finds (a parameter a branch's model or
    family leaves out, a model of another family, a value the model refuses) is a
    warning, once per parameter, instead of an error. A new space file stays strict.
    """
    try:
        space, findings = _parse(data, path, strict)
    except SpaceError as e:
        raise SpaceError(f"{source}: {e}") from None
    except _NotMapping as e:
        raise SpaceError(f"{source} {e}") from None
    _warn(source, findings)
    return space


def _warn(source: str, findings: list[str]) -> None:
    for finding in findings:
        warnings.warn(
            f"{source}: {finding} (Read as a warning: the space is a record of an earlier "
            "run; a new space file with it is refused.)",
            UserWarning,
            stacklevel=3,
        )


# ---------------------------------------------------------------- parsing


class _NotMapping(Exception):
    """The document itself is not a mapping (message reads after the file name)."""


def _parse(data: Any, path: str | None, strict: bool) -> tuple[SearchSpace, list[str]]:
    if not isinstance(data, dict):
        got = (
            "nothing (an empty file)"
            if data is None
            else f"a {type(data).__name__} ({_short(data)})"
        )
        raise _NotMapping(f"must be a mapping with keys {', '.join(TOP_KEYS)}, but got {got}.")
    for key in data:
        _lookup(key, TOP_KEYS, "top-level key", str(key))
    run = _parse_run(data.get("run"))
    if "params" not in data:
        raise SpaceError(
            "'params' is missing; a space file needs a mapping of name -> distribution."
        )
    params = _parse_params(data["params"])
    findings = _check_branches(params, dict(run), strict)
    enqueue = _parse_enqueue(data.get("enqueue"), params)
    return SearchSpace(params=params, run=run, enqueue=enqueue, path=path, strict=strict), findings


def _parse_run(raw: Any) -> tuple[tuple[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise SpaceError(f"run must be a mapping of run options, but got run={raw!r}.")
    hints = typing.get_type_hints(RunOptions)
    for key, value in raw.items():
        _lookup(key, SPACE_RUN_KEYS, "run option", f"run.{key}")
        allowed = _types_of(hints[key])
        if not _is_instance(value, allowed):
            words = " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in allowed)
            raise SpaceError(f"run.{key}: {key} must be {words}, but got {key}={value!r}.")
        try:
            RunOptions(**{key: value})
        except RaydxError as e:
            raise SpaceError(f"run.{key}: {e}") from None
    return tuple(raw.items())


def _parse_params(raw: Any) -> tuple[ParamSpec, ...]:
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(
            f"params must be a non-empty mapping of name -> distribution or constant, "
            f"but got params={raw!r}."
        )
    names = _hyperparameter_names()
    specs: dict[str, ParamSpec] = {}
    for name, entry in raw.items():
        _lookup(name, names, "hyperparameter", f"params.{name}")
        spec = _parse_entry(name, entry, specs, list(raw))
        _check_known_values(spec)
        specs[name] = spec
    return tuple(specs.values())


def _parse_entry(
    name: str, entry: Any, earlier: dict[str, ParamSpec], order: list[str]
) -> ParamSpec:
    key = f"params.{name}"
    if not isinstance(entry, dict):
        if not isinstance(entry, _SCALARS):
            raise SpaceError(
                f"{key}: a constant must be a scalar (null, bool, int, float or str); "
                f"for a choice write {{type: categorical, choices: [...]}}, "
                f"but got {name}={entry!r}."
            )
        return ParamSpec(name=name, type="fixed", value=entry)
    for f in entry:
        _lookup(f, DIST_FIELDS, "distribution field", f"{key}.{f}")
    if "type" not in entry:
        raise SpaceError(
            f"{key}: 'type' is missing; expected one of {', '.join(TYPES)}, but got {entry!r}."
        )
    kind = typing.cast(ParamType, _lookup(entry["type"], TYPES, "distribution type", f"{key}.type"))
    allowed = TYPE_FIELDS[kind]
    for f in entry:
        if f not in allowed and f not in ("type", "when", "unless"):
            raise SpaceError(
                f"{key}: '{f}' is not a field of type '{kind}' (its fields are "
                f"{', '.join(allowed)}, when, unless), but got {f}={entry[f]!r}."
            )
    when = _parse_when(name, entry.get("when"), earlier, order)
    unless = _parse_when(name, entry.get("unless"), earlier, order, field="unless")
    if kind == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(
                f"{key}: choices must be a non-empty list, but got choices={choices!r}."
            )
        return ParamSpec(name=name, type=kind, choices=tuple(choices), when=when, unless=unless)
    if kind == "fixed":
        if "value" not in entry:
            raise SpaceError(f"{key}: type 'fixed' needs 'value', but it is missing.")
        return ParamSpec(name=name, type=kind, value=entry["value"], when=when, unless=unless)
    for f in ("low", "high"):
        if f not in entry:
            raise SpaceError(f"{key}: type '{kind}' needs 'low' and 'high', but '{f}' is missing.")
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{key}: log must be true or false, but got log={log!r}.")
    return ParamSpec(
        name=name,
        type=kind,
        low=entry["low"],
        high=entry["high"],
        step=entry.get("step"),
        log=log,
        when=when,
        unless=unless,
    )


def _parse_when(
    name: str,
    raw: Any,
    earlier: dict[str, ParamSpec],
    order: list[str],
    field: str = "when",
) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """A ``when`` (or ``unless``: ``field``) mapping, checked against the params above."""
    key = f"params.{name}"
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise SpaceError(
            f"{key}: {field} must be a mapping of earlier param -> value or list of values, "
            f"but got {field}={raw!r}."
        )
    out = []
    for ref, vals in raw.items():
        wkey = f"{key}.{field}.{ref}"
        if ref not in earlier:
            if ref in order:
                raise SpaceError(
                    f"{wkey}: '{ref}' must be defined above '{name}' in the file "
                    f"(a condition reads values already suggested), but got {field}.{ref}={vals!r}."
                )
            if not earlier:
                raise SpaceError(
                    f"{wkey}: no param is defined above '{name}' to condition on, "
                    f"but got {field}.{ref}={vals!r}."
                )
            _lookup(ref, list(earlier), "earlier param", wkey)
        allowed = tuple(vals) if isinstance(vals, list) else (vals,)
        if not allowed:
            raise SpaceError(
                f"{wkey}: the list of values is empty, but got {field}.{ref}={vals!r}."
            )
        ref_spec = earlier[ref]
        for v in allowed:
            _check_value(ref, v, wkey)
            # A condition on a constant may be always false (all.yaml with its family
            # fixed): allowed, and warned of (_warn_never_suggested).
            if ref_spec.type != "fixed" and not ref_spec.contains(v):
                raise SpaceError(
                    f"{wkey}: {ref} must be {ref_spec.describe()} (see params.{ref}), "
                    f"but got {field}.{ref}={v!r}."
                )
        if field == "when" and ref == "model" and name in _all_model_params():
            for m in allowed:
                own = _model_params(m)
                if name not in own:
                    raise SpaceError(
                        f"{wkey}: model {m!r} does not take {name!r} (its parameters are: "
                        f"{', '.join(own) or 'none'}), but got when.model={vals!r}."
                    )
        out.append((ref, allowed))
    return tuple(out)


def _parse_enqueue(raw: Any, params: tuple[ParamSpec, ...]) -> tuple[dict[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpaceError(
            "enqueue must be a list of points (mappings of param -> value), "
            f"but got enqueue={raw!r}."
        )
    specs = {p.name: p for p in params}
    points = []
    for i, point in enumerate(raw):
        at = f"enqueue[{i}]"
        if not isinstance(point, dict) or not point:
            raise SpaceError(
                f"{at} must be a non-empty mapping of param -> value, but got {at}={point!r}."
            )
        for name, v in point.items():
            _lookup(name, specs, "space param", f"{at}.{name}")
            spec = specs[name]
            _check_value(name, v, f"{at}.{name}")
            if not spec.contains(v):
                raise SpaceError(
                    f"{at}.{name}: {name} must be {spec.describe()} (see params.{name}), "
                    f"but got {name}={v!r}."
                )
            for ref, allowed in spec.when:
                if ref in point and not any(_same(point[ref], a) for a in allowed):
                    raise SpaceError(
                        f"{at}.{name}: {name} is only suggested when {ref} is one of "
                        f"{list(allowed)!r}, but the point has {ref}={point[ref]!r}."
                    )
            for ref, barred in spec.unless:
                if ref in point and any(_same(point[ref], b) for b in barred):
                    raise SpaceError(
                        f"{at}.{name}: {name} is not suggested when {ref} is one of "
                        f"{list(barred)!r}, but the point has {ref}={point[ref]!r}."
                    )
        points.append(dict(point))
    return tuple(points)


# ---------------------------------------------------------------- checks


def _check_spec(p: ParamSpec) -> None:
    """Structure of one entry (no registry needed): Optuna's own rules, checked early."""
    key = p.key
    if p.type not in TYPES:
        _lookup(p.type, TYPES, "distribution type", f"{key}.type")
    if p.type == "fixed":
        if not isinstance(p.value, _SCALARS):
            raise SpaceError(f"{key}: a constant must be a scalar, but got value={p.value!r}.")
        return
    if p.type == "categorical":
        if not p.choices:
            raise SpaceError(f"{key}: choices must be a non-empty list, but got choices=[].")
        bad = [c for c in p.choices if not isinstance(c, _SCALARS)]
        if bad:
            raise SpaceError(
                f"{key}: choices must be null, bool, int, float or str, "
                f"but got choices={list(p.choices)!r}."
            )
        if len({(type(c), c) for c in p.choices}) < len(p.choices):
            raise SpaceError(
                f"{key}: choices must be distinct, but got choices={list(p.choices)!r}."
            )
        return
    for f in ("low", "high", "step"):
        v = getattr(p, f)
        if v is None and f == "step":
            continue
        if p.type == "int" and not _is_int(v):
            raise SpaceError(f"{key}: {f} must be an int for type 'int', but got {f}={v!r}.")
        if not _is_number(v) or not math.isfinite(v):
            raise SpaceError(f"{key}: {f} must be a finite number, but got {f}={v!r}.")
    assert p.low is not None and p.high is not None
    if p.low > p.high:
        raise SpaceError(f"{key}: low must be <= high, but got low={p.low}, high={p.high}.")
    if p.log and p.step is not None and not (p.type == "int" and p.step == 1):
        raise SpaceError(
            f"{key}: step cannot be used with log: true (Optuna forbids it"
            + (" for a step other than 1" if p.type == "int" else "")
            + f"), but got step={p.step}, log=True."
        )
    if p.log and p.low <= 0:
        raise SpaceError(f"{key}: low must be > 0 when log is true, but got low={p.low}.")
    if p.step is not None:
        if p.step <= 0:
            raise SpaceError(f"{key}: step must be > 0, but got step={p.step}.")
        if not math.isfinite((p.high - p.low) / p.step):  # 1e-320: an endless grid
            raise SpaceError(
                f"{key}: step must leave a finite number of values between low and high, "
                f"but got low={p.low}, high={p.high}, step={p.step}."
            )
        if not _on_grid(p.high - p.low, p.step):
            raise SpaceError(
                f"{key}: high - low must be a multiple of step, "
                f"but got low={p.low}, high={p.high}, step={p.step}."
            )


def _check_known_values(p: ParamSpec) -> None:
    """What the rest of raydx will accept: option names, value types, config ranges."""
    if p.name in _named_options() and p.type in ("int", "float"):
        raise SpaceError(
            f"{p.key}: {p.name} is a name, so its type must be 'categorical' or a constant, "
            f"but got type={p.type!r}."
        )
    expected = _expected_types().get(p.name)
    numeric_ok = expected is float or (expected is int and p.type == "int")
    if expected is not None and p.type in ("int", "float") and not numeric_ok:
        raise SpaceError(
            f"{p.key}: {p.name} takes {_TYPE_WORDS[expected]}, so its type cannot be "
            f"{p.type!r}, but got type={p.type!r}."
        )
    if p.type == "categorical":
        for c in p.choices:
            _check_value(p.name, c, f"{p.key}.choices")
    elif p.type == "fixed":
        _check_value(p.name, p.value, p.key)
    else:
        for f in ("low", "high"):
            _check_value(p.name, getattr(p, f), f"{p.key}.{f}")


def _check_value(name: str, v: Any, key: str) -> None:
    """One concrete value of hyperparameter ``name``, checked the way the trainer will."""
    options = _named_options().get(name)
    if options is not None:
        _lookup(v, options, name, key)
        return
    expected = _expected_types().get(name)
    if expected is not None and not _is_instance(v, (expected,)):
        raise SpaceError(f"{key}: {name} must be {_TYPE_WORDS[expected]}, but got {name}={v!r}.")
    try:
        if name in AUGMENT_PARAMS:
            AugmentConfig(**{name: v})
        elif name in _TRIAL_FIELDS:
            TrialConfig(**{name: v})
        else:
            from raydx.families import check_family_param

            check_family_param(name, v)
    except RaydxError as e:
        raise SpaceError(f"{key}: {e}") from None


# ---------------------------------------------------------------- cross-checks

# Branches of the conditions walked at most (a space has a handful; all.yaml has 10).
MAX_BRANCHES = 4096
# An int range is checked at every value up to this many, else at its two ends.
MAX_PROBES = 16
# Side of the images a model is built at when run.image_size is not set: the checks
# are of the parameters' own ranges and names, not of the data's size.
CHECK_IMAGE_SIZE = 64
# Params that the training or the model reads only at some value of another: searched
# elsewhere, every trial would draw them and train without them (an audit: momentum
# searched beside a fixed adamw, reported as the winner's 0.93).
USED_ONLY_WITH: dict[str, tuple[str, tuple[Any, ...]]] = {
    "momentum": ("optimizer", ("sgd",)),
    "dense_units": ("head", ("dense",)),
}


# What an anomaly-mode autoencoder never reads: it learns its images with ae_lr, in
# batches, without augmentation, and trains no classifier (nor the head's dropout).
ANOMALY_UNREAD = frozenset(
    {f.name for f in fields(TrialConfig)}
    - {"family", "model", "model_params", "family_params", "augment", "batch_size"}
    | {f.name for f in fields(AugmentConfig)}
    | {"dropout"}
)


class _Other:
    """A value of a numeric param that no ``when`` names (it satisfies no condition)."""

    def __repr__(self) -> str:
        return "<other>"


_OTHER = _Other()


def _check_branches(
    params: tuple[ParamSpec, ...],
    run: Mapping[str, Any],
    strict: bool = True,
    *,
    warn_never: bool = True,
) -> list[str]:
    """What no entry shows alone, checked on every branch of the conditions (every
    combination of the values the ``when`` conditions, ``family`` and ``model`` read):

    - ``model`` is of the family's kind (the autoencoder family trains autoencoders);
    - every active param goes somewhere: the training, the augmentation, the branch's
      model or its family, and a family param its family passes to a second model
      (``gan_model``) is one that model declares (else it is searched and left out);
    - every value of a model or family parameter (range ends, short int grids, choices)
      builds the network the branch's trial diagnoses with, its other values at their
      defaults (on the meta device: no weights are made).

    A space that names no family (neither ``run.family`` nor ``params.family``) is not
    checked here: the run gives it one (``SearchSpace.with_default``), which checks it.
    ``strict``: a finding raises SpaceError; else the findings are returned, the first
    of each parameter, for the caller to warn with.
    """
    from raydx.config import model_kind_error
    from raydx.families import list_families

    if "family" not in run and not any(p.name == "family" for p in params):
        return []
    found: dict[str, str] = {}  # param key -> its first finding

    def finding(key: str, message: str, param: str | None = None) -> None:
        if strict:
            raise SpaceError(f"{key}: {message}")
        found.setdefault(param or key, f"{key}: {message}")

    family_key = "params.family" if any(p.name == "family" for p in params) else "run.family"
    default_family = run.get("family", RunOptions.family)
    _lookup(default_family, _family_names(), "family", "run.family")
    image_size = run.get("image_size") or CHECK_IMAGE_SIZE
    branches, complete = _branches(params)
    if not complete:
        warnings.warn(
            f"the conditions of this space have more than {MAX_BRANCHES} branches "
            f"(combinations of family, model and the values a `when` reads); only the first "
            f"{MAX_BRANCHES} are checked when the file is read (raydx.space.MAX_BRANCHES), "
            "the rest when their trials run.",
            UserWarning,
            stacklevel=3,
        )
    ok: list[tuple[dict[str, Any], str, str]] = []  # branches of a model of its family
    for values in branches:
        family = values.get("family", default_family)
        model = _model_of(values, family)
        error = model_kind_error(model, family)
        if error:
            hint = _family_hint([f.name for f in list_families() if model in f.models()])
            key = "params.model" if "model" in values else family_key
            if strict:
                raise SpaceError(f"{key}: {error}{hint}")
            # an earlier run: its cnn_seed under the autoencoder family trained conv_ae
            # (config.legacy_params); another pairing's trials failed, and fail again
            legacy = (family, model) == ("autoencoder", "cnn_seed")
            then = "trained conv_ae for it, as this one will" if legacy else "failed its trials"
            finding(key, f"{error}{hint} An earlier raydx {then}.")
            continue
        ok.append((values, family, model))
        for p in params:
            if p.active(values):
                dropped = _dropped(p, params, values, family, model) or _unread(
                    p, params, values, model
                )
                if dropped:
                    finding(p.key, dropped)
    if complete and warn_never:
        _warn_never_suggested(params, branches)
    built: dict[Any, None] = {}
    seen: set[Any] = set()
    for values, family, model in ok:
        taken = {
            k: v
            for k, v in values.items()
            if v is not _OTHER and _route(k, family, model) is not None
        }
        # What chooses the network besides the probed value: the branch's other model
        # and family values (a family's modes, gan_model; a depth that an instance norm
        # fails with). A probe is built once per (family, model, those values).
        modes = _hashable(
            {k: v for k, v in taken.items() if _route(k, family, model) in ("model", "family")}
        )
        for p in params:
            if not p.active(values) or _route(p.name, family, model) not in (
                "model",
                "family",
            ):
                continue
            for v, key in _probes(p):
                at = (family, model, modes, p.name, _hashable(v))
                if at in seen:
                    continue
                seen.add(at)
                try:
                    _build_network({**taken, "family": family, p.name: v}, image_size, built)
                except RaydxError as e:
                    finding(key, str(e), p.key)
    return list(found.values())


def _unread(
    p: ParamSpec, params: tuple[ParamSpec, ...], values: Mapping[str, Any], model: str
) -> str | None:
    """Why this branch's trials would search ``p`` and train without it: the value of
    another param (given, else its default) that ``p`` is read at (``USED_ONLY_WITH``)."""
    constant = p.type == "fixed" or (p.type == "categorical" and len(p.choices) == 1)
    if constant:  # a constant is not searched
        return None
    if p.name in ANOMALY_UNREAD and values.get("ae_mode") == "anomaly":
        spec = next(q for q in params if q.name == "ae_mode")
        above = spec in params[: params.index(p)]  # a condition reads values suggested before
        move = "" if above else " (with params.ae_mode above it)"
        fix = (
            ""
            if spec.type == "fixed"
            else f"condition it with `unless: {{ae_mode: anomaly}}`{move}, or "
        )
        return (
            f"{p.name} is not used where ae_mode is anomaly (the autoencoder learns with "
            "ae_lr and trains no classifier); trials where ae_mode='anomaly' would search "
            f"it and leave it out: {fix}remove params.{p.name}."
        )
    if p.name not in USED_ONLY_WITH:
        return None
    ref, takers = USED_ONLY_WITH[p.name]
    v = values[ref] if ref in values else _default(ref, model)
    if v is _OTHER or any(_same(v, t) for t in takers):
        return None
    said = "" if ref in values else " (its default)"
    return (
        f"{p.name} is used only where {ref} is {_flow(list(takers))}; trials where "
        f"{ref}={v!r}{said} would search it and leave it out: "
        + _fix(p, params, ref, list(takers))[:-1]
        + f", or remove params.{p.name}."
    )


def _default(name: str, model: str) -> Any:
    """A param's value where the space does not set it: the model's default, else the
    trial's (``TrialConfig``)."""
    own = _model_params(model)
    if name in own:
        return own[name]
    return {f.name: f.default for f in fields(TrialConfig)}.get(name)


def _warn_never_suggested(params: tuple[ParamSpec, ...], branches: list[dict[str, Any]]) -> None:
    """A param whose ``when``/``unless`` holds on no branch (a condition on a fixed value
    it never has) is never suggested: every trial trains with its default, which no
    result records (an audit: ``lr`` ``when: {model: cnn_seed}`` with ``model: cnn``).
    Legal, as a family fixed in all.yaml leaves the others' params so: a warning."""
    never = [p.name for p in params if not any(p.active(v) for v in branches)]
    if not never:
        return
    shown = ", ".join(never[:8]) + (f" and {len(never) - 8} more" if len(never) > 8 else "")
    warnings.warn(
        f"params {shown}: never suggested, as their when/unless conditions hold on no "
        "trial of this space (they read values the space never gives); every trial "
        "trains with their defaults. Remove them, or correct the conditions.",
        UserWarning,
        stacklevel=4,
    )


@functools.cache
def _route(key: str, family: str, model: str) -> str | None:
    """``config.param_route``, once per (key, family, model): the registry is fixed once
    the models are imported."""
    from raydx.config import param_route

    return param_route(key, family, model)


def _model_of(values: Mapping[str, Any], family: str) -> str:
    from raydx.families import get_family

    return str(values.get("model") or get_family(family).default_model)


def _branches(params: tuple[ParamSpec, ...]) -> tuple[list[dict[str, Any]], bool]:
    """Every combination of values of the params that decide what a trial is: those a
    ``when`` reads, ``family``, ``model`` and the family params that are names (modes
    such as ``gan_mode``, which choose the network), each where active (file order, as
    ``SearchSpace.sample``). A numeric param takes the values conditions name, and
    ``_OTHER`` for the rest of its range. The first ``MAX_BRANCHES`` of them, and
    whether that is all."""
    from raydx.families import all_family_params

    named: dict[str, list[Any]] = {}
    for p in params:
        for ref, allowed in (*p.when, *p.unless):
            named.setdefault(ref, []).extend(allowed)
        if p.name in USED_ONLY_WITH:  # the value that reads it decides a branch too
            ref, takers = USED_ONLY_WITH[p.name]
            named.setdefault(ref, []).extend(takers)
    modes = {
        p.name
        for p in params
        if p.name in all_family_params()
        and p.type in ("categorical", "fixed")
        and all(isinstance(v, str) for v in _domain(p, []))
    }
    deciding = set(named) | modes | {"family", "model"}
    out: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    complete = True

    def walk(i: int) -> None:
        nonlocal complete
        if len(out) >= MAX_BRANCHES:
            complete = False
            return
        if i == len(params):
            out.append(dict(values))
            return
        p = params[i]
        if p.name not in deciding or not p.active(values):
            walk(i + 1)
            return
        for v in _domain(p, named.get(p.name, [])):
            values[p.name] = v
            walk(i + 1)
        del values[p.name]

    walk(0)
    return out, complete


def _domain(p: ParamSpec, named: list[Any]) -> list[Any]:
    if p.type == "fixed":
        return [p.value]
    if p.type == "categorical":
        return list(p.choices)
    inside: list[Any] = []
    for v in named:
        if p.contains(v) and not any(_same(v, u) for u in inside):
            inside.append(v)
    return [*inside, _OTHER] if _grid_size(p) > len(inside) else inside


def _grid_size(p: ParamSpec) -> float:
    assert p.low is not None and p.high is not None
    step = p.step if p.step is not None else (1 if p.type == "int" else None)
    if step is None:
        return 1 if p.low == p.high else math.inf
    return round((p.high - p.low) / step) + 1


def _probes(p: ParamSpec) -> list[tuple[Any, str]]:
    """The values of ``p`` a model is built with, each with the key an error names."""
    if p.type == "fixed":
        return [(p.value, p.key)]
    if p.type == "categorical":
        return [(c, f"{p.key}.choices") for c in p.choices]
    assert p.low is not None and p.high is not None
    ends = [(p.low, f"{p.key}.low"), (p.high, f"{p.key}.high")]  # first: errors name them
    if p.type == "float" or _grid_size(p) > MAX_PROBES:
        return ends
    step = 1 if p.step is None else int(p.step)
    inner = [(v, p.key) for v in range(int(p.low) + step, int(p.high), step)]
    return [*ends, *inner] if p.high != p.low else ends[:1]


def _build_network(point: dict[str, Any], image_size: int, built: dict[Any, None]) -> None:
    """Build, on the meta device, the registry network a trial of ``point`` diagnoses
    with (``built``: those already built); a RaydxError names the model and the value."""
    import torch

    from raydx.models.registry import create_model
    from raydx.train import diagnosis_network, skip_init

    cfg = TrialConfig.from_params(point)
    name, kwargs = diagnosis_network(cfg)
    key = (name, _hashable(kwargs))
    if key in built:
        return
    try:
        with torch.device("meta"), skip_init()():
            create_model(name, in_channels=1, num_outputs=1, image_size=image_size, **kwargs)
    except RaydxError as e:
        raise RaydxError(f"model {name!r}: {e}") from None
    except Exception:  # not a bad value (e.g. a model whose build reads its weights):
        pass  # the trial builds it for real
    built[key] = None


def _hashable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in x.items()))
    return (type(x).__name__, x)


def _dropped(
    p: ParamSpec,
    params: tuple[ParamSpec, ...],
    values: Mapping[str, Any],
    family: str,
    model: str,
) -> str | None:
    """Why the trials of this branch would search ``p`` and leave it out, and the
    ``when:`` that keeps it to the branches that take it; None if they take it."""
    from raydx.config import not_taken, takers
    from raydx.families import get_family
    from raydx.models.registry import list_models, model_family

    fam = get_family(family)
    branch = f"family={family!r}, model={model!r}"
    route = _route(p.name, family, model)
    if route == "family":
        sub = fam.sub_model_drops(p.name, values)
        if sub is None:
            return None
        assert fam.sub_model is not None
        kind = model_family(str(fam.params[fam.sub_model]))
        own = [m for m in list_models(kind) if p.name in _model_params(m)]
        return (
            f"{p.name} is not a parameter of {fam.sub_model} {sub!r} (family {family!r}), "
            f"which is built with it only where it declares it; {fam.sub_model}s that take "
            f"it: {', '.join(own) or 'none'}. Trials of the branch {branch}, "
            f"{fam.sub_model}={sub!r} would search it and leave it out: "
            + _fix(p, params, fam.sub_model, own)
        )
    if route is not None:
        return None
    models, fams = takers(p.name)
    own = [m for m in models if m in fam.models()]
    said = (
        f"{not_taken(p.name, family, model)} Trials of the branch {branch} would search it "
        "and leave it out: "
    )
    return said + (_fix(p, params, "model", own) if own else _fix(p, params, "family", fams))


def _fix(p: ParamSpec, params: tuple[ParamSpec, ...], ref: str, takers: list[str]) -> str:
    """What to write instead, ``takers`` being the values of ``ref`` that take ``p``: a
    ``when`` on ``ref`` (``p``'s other conditions kept) where ``ref`` is a choice above
    ``p``, else a value of ``ref``."""
    if not takers:
        return f"remove params.{p.name}."
    earlier = {q.name: q for q in params[: params.index(p)]}
    spec = earlier.get(ref)
    if spec is None:
        where = "" if ref == "family" else " above it"  # run.family is fine too
        return f"add `{ref}: {takers[0]}`{where}."
    if spec.type == "fixed":
        return f"set `{ref}: {takers[0]}`."
    inside = [t for t in takers if spec.contains(t)]
    when = {name: list(allowed) for name, allowed in p.when if name != ref}
    when[ref] = list(inside or takers)
    conds = ", ".join(f"{name}: {_flow([_scalar(v) for v in vs])}" for name, vs in when.items())
    add = "" if inside else f"add {_flow(takers)} to the choices of params.{ref}, and "
    return f"{add}condition it with `when: {{{conds}}}`."


def _family_hint(fams: list[str]) -> str:
    """`` Set `family: X`, or condition it with `when: {family: X}`.``; '' for no family."""
    if not fams:
        return ""
    return f" Set `family: {fams[0]}`, or condition it with `when: {{family: {_flow(fams)}}}`."


def _scalar(v: Any) -> str:
    """A YAML scalar as a space file writes it."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _flow(names: list[str]) -> str:
    """A YAML flow value: ``a`` or ``[a, b]``."""
    return names[0] if len(names) == 1 else f"[{', '.join(names)}]"


# ---------------------------------------------------------------- registry (lazy)


_TRIAL_FIELDS = frozenset(f.name for f in fields(TrialConfig)) - {
    "model",
    "model_params",
    "augment",
}


def _registry() -> types.ModuleType:
    import raydx.models  # registers every model family

    return raydx.models


def _named_options() -> dict[str, tuple[str, ...]]:
    reg = _registry()
    return {
        **NAMED_OPTIONS,
        "model": tuple(reg.list_models()),
        "family": tuple(_family_names()),
    }


def _family_names() -> list[str]:
    from raydx.families import list_family_names

    return list_family_names()


def _hyperparameter_names() -> set[str]:
    _registry()
    from raydx.config import hyperparameter_names

    return hyperparameter_names()


def _model_params(model: str) -> dict[str, Any]:
    return dict(_registry().model_params(model))


def _all_model_params() -> set[str]:
    return {p for m in _registry().list_models() for p in _model_params(m)}


def _expected_types() -> dict[str, type]:
    """The Python type each hyperparameter takes: config annotations, model defaults."""
    out: dict[str, type] = {}
    for m in _registry().list_models():
        for p, default in _model_params(m).items():
            if isinstance(default, (bool, int, float, str)):
                out.setdefault(p, type(default))
    for cls in (TrialConfig, AugmentConfig):
        for p, hint in typing.get_type_hints(cls).items():
            if hint in (bool, int, float, str):
                out[p] = hint
    return out


# ---------------------------------------------------------------- helpers


def _lookup(name: Any, options: Any, what: str, key: str) -> str:
    try:
        return lookup(name, options, what)
    except RaydxError as e:
        raise SpaceError(f"{key}: {e}") from None


def _types_of(hint: Any) -> tuple[type, ...]:
    args = typing.get_args(hint)
    return tuple(args) if args else (hint,)


def _is_instance(v: Any, allowed: tuple[type, ...]) -> bool:
    """isinstance where bool is not an int and an int is a float (as in YAML)."""
    if isinstance(v, bool):
        return bool in allowed
    if isinstance(v, int) and float in allowed:
        return True
    return isinstance(v, tuple(allowed))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _on_grid(x: float, step: float) -> bool:
    if _is_int(x) and _is_int(step):
        return x % step == 0
    k = round(x / step)
    return math.isclose(k * step, x, rel_tol=_REL_TOL, abs_tol=_REL_TOL * abs(step))


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps True apart from 1 and accepts 1 == 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def _one_line(x: object) -> str:
    return " ".join(str(x).split())


def _short(x: object, n: int = 60) -> str:
    s = _one_line(repr(x))
    return s if len(s) <= n else s[: n - 3] + "..."


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.2) and rejects duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: let PyYAML report it
                continue
            if dup:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)
