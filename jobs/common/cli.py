"""The `birefnet` command line: one parser layer for every subcommand, built from its pydantic config.

What every command shares lives here and only here: flags derived from the config's fields (each
field's description is its help), a `--config` YAML/JSON file beneath the flags, validation
errors and unknown flags told in one line naming the flag, exit code 2 for job-level problems,
and logging set-up. A command is a config model plus a function that runs it (`Command`).

pydantic-settings' CLI was tried first: it splits tuple and list fields into items before the
fields' own validators run (so `--resolution 1024x768` fails), merges the environment into every
field, and reports errors as multi-line validation dumps; a small argparse layer keeps the
documented flags exactly.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .errors import EXIT_JOB_ERROR, one_line

__all__ = [
    "COMMANDS",
    "COMMAND_MODULES",
    "Command",
    "CommandEntry",
    "ConfigError",
    "Option",
    "build_config",
    "load_command",
    "load_config_file",
    "main",
    "options_of",
    "parse_config",
    "run_command",
]

log = logging.getLogger("jobs.common.cli")
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class CommandEntry:
    """Where a subcommand lives (its module defines it as ``COMMAND``) and what it does."""

    module: str
    summary: str


#: Every subcommand, in the order `birefnet --help` lists them. Known without importing them:
#: `birefnet --help` loads none, `birefnet NAME ...` only NAME's module (torch, Ray: seconds).
COMMANDS = {
    "segment": CommandEntry(
        "jobs.segment",
        "Segment an image archive (folders, S3 prefixes, URI lists, tar shards, scenes) on Ray.",
    ),
    "predict": CommandEntry(
        "jobs.predict", "Segment images or a folder on this machine, without Ray (masks equal the job's)."
    ),
    "serve": CommandEntry(
        "jobs.serve",
        "Serve BiRefNet over HTTP on Ray Serve (batched model replicas, a web page, box guidance).",
    ),
    "evaluate": CommandEntry(
        "jobs.evaluate",
        "Score predicted masks against ground truth (S, F, E, wF, MAE, HCE) with pysodmetrics.",
    ),
    "report": CommandEntry("jobs.report", "HTML report of a segmentation run, from its manifest."),
    "train": CommandEntry(
        "jobs.train",
        "Fine-tune or train BiRefNet with its multi-stage supervision on Ray Train (DDP, CPU or GPU).",
    ),
    "export": CommandEntry(
        "jobs.export",
        "Export BiRefNet to ONNX (dynamic batch and size, standard operators) for onnxruntime, TensorRT and rembg.",
    ),
    "synthesize": CommandEntry(
        "jobs.synthesize",
        "Generate a DIS5K-style set of photo-like scenes and their masks (training data, tests).",
    ),
    "demo": CommandEntry(
        "jobs.demo", "Segment a generated sample folder on an embedded local Ray (what `make demo` runs)."
    ),
}
#: The modules of every subcommand, in `COMMANDS` order.
COMMAND_MODULES = tuple(entry.module for entry in COMMANDS.values())
#: A field carrying ``json_schema_extra={"file_only": True}`` is settable in --config files only.
FILE_ONLY = "file_only"
#: ``json_schema_extra={"positional": True}``: a list field given as the command's arguments.
POSITIONAL = "positional"
#: ``json_schema_extra={"short": "-o"}``: a one-letter spelling beside the long flag.
SHORT = "short"
#: Validation errors whose message already says what was given (the fields' own validators do).
_SELF_EXPLAINING = ("missing", "extra_forbidden", "value_error", "assertion_error")


class ConfigError(ValueError):
    """The configuration is invalid; the message is one line naming the option and the problem."""


@dataclass(frozen=True)
class Command:
    """A subcommand: the config its flags are built from, and what runs it (returns the exit code)."""

    name: str
    config: type[BaseModel]
    run: Callable[[Any], int]

    @property
    def module(self) -> str:
        return COMMANDS[self.name].module

    @property
    def summary(self) -> str:
        return COMMANDS[self.name].summary

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Entry point of `python -m <module>`: the same flags as `birefnet <name>`."""
        return run_command(self, argv)


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage before an error; a wrong flag deserves one line."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.prog}: {message} (see --help)")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _literal_choices(annotation: Any) -> list[str] | None:
    """Choices of a ``Literal[...]`` field (also inside ``Optional``), for argparse's help."""
    if typing.get_origin(annotation) is Literal:
        return [str(v) for v in typing.get_args(annotation)]
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is Literal:
            return [str(v) for v in typing.get_args(arg)]
    return None


def _default_text(field: FieldInfo) -> str | None:
    """The default as a user would type it; None where there is nothing to show."""
    if field.is_required():
        return None
    default = field.get_default(call_default_factory=True)
    if default is None or default is PydanticUndefined or isinstance(default, bool):
        return None
    return ",".join(map(str, default)) if isinstance(default, list | tuple) else str(default)


def _group_title(model: type[BaseModel], name: str) -> str | None:
    """Options a mixin (`jobs.common.options`) declares are shown under its docstring's title."""
    for cls in reversed(model.__mro__):
        if cls is not model and name in getattr(cls, "__annotations__", {}):
            return (cls.__doc__ or "").strip().splitlines()[0] or None
    return None


@dataclass(frozen=True)
class Option:
    """One option of a command as users meet it: in `--help`, in --config files, in the docs."""

    name: str
    spellings: tuple[str, ...]  # ("-o", "--output"); () for file-only settings
    description: str
    required: bool
    default: str | None
    choices: tuple[str, ...] | None
    boolean: bool
    positional: bool
    group: str | None

    @property
    def help(self) -> str:
        if self.required:
            return f"{self.description} (required)"
        return f"{self.description} (default: {self.default})" if self.default else self.description


def options_of(model: type[BaseModel]) -> list[Option]:
    """Every setting of a config model, in declaration order (the one source of flags and docs)."""
    options = []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        positional = bool(extra.get(POSITIONAL))
        if extra.get(FILE_ONLY):
            spellings: tuple[str, ...] = ()
        elif positional:
            spellings = (name.upper(),)
        else:
            spellings = (*([str(extra[SHORT])] if extra.get(SHORT) else []), _flag(name))
        choices = _literal_choices(field.annotation)
        options.append(
            Option(
                name=name,
                spellings=spellings,
                description=field.description or "",
                required=field.is_required(),
                default=_default_text(field),
                choices=tuple(choices) if choices else None,
                boolean=field.annotation is bool,
                positional=positional,
                group=_group_title(model, name),
            )
        )
    return options


def add_options(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One flag per field; values stay strings, so the field's own validators parse them."""
    parser.add_argument(
        "--config", metavar="FILE", help="YAML or JSON file with any options; flags override it"
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in options_of(model):
        help_text = option.help.replace("%", "%%")
        if not option.spellings:
            continue
        if option.positional:
            parser.add_argument(
                option.name, nargs="*", default=None, metavar=option.spellings[0], help=help_text
            )
            continue
        target: Any = parser
        if option.group:
            target = groups.get(option.group) or groups.setdefault(
                option.group, parser.add_argument_group(option.group)
            )
        settings: dict[str, Any] = {"dest": option.name, "default": None, "help": help_text}
        if option.boolean:
            settings["action"] = argparse.BooleanOptionalAction
        else:
            settings["metavar"] = (
                "{" + ",".join(option.choices) + "}" if option.choices else option.name.upper()
            )
        target.add_argument(*option.spellings, **settings)


def load_config_file(path: str) -> dict[str, Any]:
    """Settings from a YAML or JSON file (keys are field names, as in the resolved config)."""
    try:
        text = Path(path).read_text()
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {one_line(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        names = [str(p) for p in item["loc"] if not isinstance(p, int)]
        message = item["msg"].removeprefix("Value error, ")
        if not names:
            problems.append(message)
            continue
        given = "" if item["type"] in _SELF_EXPLAINING else f" (got {item['input']!r})"
        problems.append(f"{_flag(names[0])}: {message}{given}")
    return "invalid configuration: " + "; ".join(problems)


def build_config(model: type[M], values: dict[str, Any]) -> M:
    """Validate settings into ``model``; every problem is named in one line."""
    try:
        return model(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def parse_config(model: type[M], argv: Sequence[str] | None, prog: str = "birefnet") -> M:
    """Flags override the `--config` file; unknown keys in either are errors."""
    parser = _OneLineParser(prog=prog)
    add_options(parser, model)
    return _config_from(model, parser.parse_args(argv))


def _config_from(model: type[M], args: argparse.Namespace) -> M:
    values = load_config_file(args.config) if args.config else {}
    given = {k: v for k, v in vars(args).items() if k in model.model_fields and v not in (None, [])}
    values.update(given)
    return build_config(model, values)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _guarded(run: Callable[[], int]) -> int:
    """Job-level problems end as one line on stderr and exit code 2, never a traceback."""
    try:
        return run()
    except (Exception, KeyboardInterrupt) as exc:
        log.debug("command failed", exc_info=exc)
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_JOB_ERROR


def run_command(command: Command, argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m <command.module>`: the same flags as `birefnet <command.name>`."""
    configure_logging()
    return _guarded(lambda: command.run(parse_config(command.config, argv, f"python -m {command.module}")))


def load_command(name: str) -> Command:
    """The subcommand ``name``, importing its module (and whatever that loads) only now."""
    command: Command = importlib.import_module(COMMANDS[name].module).COMMAND
    return command


def commands() -> list[Command]:
    """Every subcommand, all modules imported."""
    return [load_command(name) for name in COMMANDS]


def main(argv: Sequence[str] | None = None) -> int:
    """`birefnet COMMAND [options]`; `birefnet COMMAND --help` lists every option.

    Only the command named on the line is imported: the others' options are never needed."""
    configure_logging()
    args = list(sys.argv[1:] if argv is None else argv)
    named = next((arg for arg in args if not arg.startswith("-")), None)
    parser = _OneLineParser(prog="birefnet", description="BiRefNet segmentation of image archives on Ray.")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_OneLineParser
    )
    for name, entry in COMMANDS.items():
        sub = subparsers.add_parser(
            name, help=entry.summary, description=entry.summary, prog=f"birefnet {name}"
        )
        if name == named:
            command = load_command(name)
            add_options(sub, command.config)
            sub.set_defaults(_command=command)

    def run() -> int:
        parsed = parser.parse_args(args)
        chosen: Command = parsed._command
        return chosen.run(_config_from(chosen.config, parsed))

    return _guarded(run)


if __name__ == "__main__":
    raise SystemExit(main())
