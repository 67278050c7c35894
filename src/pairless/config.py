"""Configuration: pydantic models with defaults that work, stored as YAML read with a safe loader.

Each method's configuration subclasses :class:`Config`; a model folder keeps the one it was
trained with (``config.yaml``) so it can be rebuilt on any machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from pairless.errors import PairlessError
from pairless.io.files import atomic_path
from pairless.io.limits import check_regular

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    """Base of every configuration: unknown keys are errors, assignments are validated.

    ``PROFILES`` names ready-made settings (``quick``: CPU minutes; ``paper``: the method paper's
    schedule); :meth:`for_profile` builds a configuration from one, with a user's overrides on top.
    """

    # NaN and ±inf are no setting (an infinite learning rate trains to NaN and would be saved)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    PROFILES: ClassVar[dict[str, dict]] = {}

    @field_validator("*", mode="before")
    @classmethod
    def _no_bools_for_numbers(cls, value, info: ValidationInfo):
        """``steps: true`` is no number of steps: YAML's booleans are refused where a number is meant."""
        if isinstance(value, bool) and not _takes_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"must be a number, not {str(value).lower()}")
        return value

    @classmethod
    def for_profile(cls: type[C], profile: str, **overrides) -> C:
        """The profile's settings (e.g. ``quick`` or ``paper``) with ``overrides`` (e.g. from a YAML file) on
        top."""
        if profile not in cls.PROFILES:
            raise PairlessError(f"unknown profile {profile!r}; use one of {', '.join(cls.PROFILES)}")
        return cls.from_dict({**cls.profile_settings(profile, overrides), **overrides})

    @classmethod
    def profile_settings(cls, profile: str, overrides: dict) -> dict:
        """A profile's settings; a subclass may make them depend on an override (say, the architecture)."""
        return cls.PROFILES[profile]

    @classmethod
    def from_dict(cls: type[C], data: dict) -> C:
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise PairlessError(
                f"invalid {cls.__name__} setting {where!r}: {first['msg']}; "
                "fix that key in the configuration (see `pairless fit --help` for the defaults)"
            ) from None

    @classmethod
    def from_yaml(cls: type[C], path: str | os.PathLike) -> C:
        return cls.from_dict(read_yaml(path))

    def to_yaml(self, path: str | os.PathLike) -> None:
        write_yaml(path, self.model_dump(mode="json"))


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping with the safe loader: a YAML file can never run code."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        check_regular(path)  # a FIFO would wait for a writer forever: say what it is
    if not path.is_file():
        raise PairlessError(f"configuration file {str(path)!r} does not exist; check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PairlessError(
            f"{str(path)!r} is not valid YAML ({str(err).splitlines()[0]}); fix the file"
        ) from None
    if not isinstance(data, dict):
        raise PairlessError(f"{str(path)!r} must hold a YAML mapping of settings, not {type(data).__name__}")
    return data


def write_yaml(path: str | os.PathLike, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))


def _takes_bool(annotation) -> bool:
    """Whether a field's type admits a bool (``bool``, or a union or ``Literal`` holding one)."""
    if annotation is bool:
        return True
    return any(_takes_bool(a) or isinstance(a, bool) for a in get_args(annotation))
