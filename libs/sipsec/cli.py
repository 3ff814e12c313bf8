"""One command-line shape for every service: ``sipsec-<service> COMMAND [flags]``.

Every service's console script is built from the same skeleton (:func:`service_main`):

* a command is required (``serve`` for every service, more for some, e.g. ``sipsec-pkg init``);
  ``--help`` answers at each level;
* ``serve``'s flags are the service's settings (:mod:`sipsec.config`): one ``--flag`` per
  setting, overriding its environment variable, which overrides the default; secrets have no
  flag (:func:`add_setting_flags`);
* exit status: 0 done; 2 usage (unknown command or flag, missing command; argparse's own
  message); 1 a configuration or runtime error, reported as one line ``<prog>: <message>`` on
  stderr, without a traceback. A bad setting's message names its variable (or flag).

The environment is read only when the command runs, never while the parser is built, so
``--help`` works whatever the environment holds, and a bad variable is an error (1) of the
command rather than a usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

from sipsec import lifecycle
from sipsec.config import ConfigError, add_flags, from_args
from sipsec.lifecycle import stop_on_signals
from sipsec.telemetry import logs, tracing

__all__ = ["LOG_FORMAT", "Command", "add_setting_flags", "build_parser", "config_from_args", "configure_from", "configure_logging",
           "run_parsed", "serve_command", "serve_main", "serve_until_signalled", "service_main"]

#: Every service's log line (on stderr) in the text format (``SIPSEC_LOG_FORMAT=text``).
LOG_FORMAT = logs.TEXT_FORMAT

T = TypeVar("T")

#: What a command does with its parsed arguments: an exit status (None = 0).
Runner = Callable[[argparse.Namespace], "int | None"]


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one line of help, what it adds to its parser, and what it runs.

    ``commands``: nested subcommands (``sipsec-pkg user add``); then ``run`` is used only
    when none is given (None: a usage error listing them).
    """

    name: str
    help: str
    run: Runner | None = None
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    description: str = ""
    commands: tuple[Command, ...] = field(default=())


def add_setting_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One ``--flag`` per setting of ``config_cls`` (none for secrets; booleans also take
    ``--no-…``). A flag not given leaves the setting to its variable (absent from the namespace)."""
    add_flags(parser.add_argument_group("settings (each overrides its environment variable)"), config_cls)


def config_from_args(config_cls: type[T], args: argparse.Namespace,
                     environ: Mapping[str, str] | None = None) -> T:
    """``config_cls`` from the defaults, the environment, then the flags :func:`add_setting_flags`
    parsed; raises :class:`~sipsec.config.ConfigError` (naming the variable) for a bad value."""
    try:
        return from_args(config_cls, args, environ)
    except ConfigError:
        raise
    except ValueError as exc:  # a combination check that did not name its error: still a config error
        raise ConfigError(str(exc)) from None


def serve_command(config_cls: type[T], serve: Callable[[T], int | None], *, description: str,
                  help: str = "run the service until SIGTERM/SIGINT, then drain", name: str = "serve") -> Command:
    """The ``serve`` command (or another ``name`` that takes the settings): flags from
    ``config_cls``'s settings, then ``serve(config)``."""
    def run(args: argparse.Namespace) -> int | None:
        return serve(config_from_args(config_cls, args))

    return Command(name, help, run, lambda p: add_setting_flags(p, config_cls), description)


def _add(sub: Any, command: Command, prog: str) -> None:
    parser = sub.add_parser(command.name, help=command.help, description=command.description or command.help)
    if command.arguments is not None:
        command.arguments(parser)
    parser.set_defaults(_command=command, _parser=parser)
    if command.commands:
        nested = parser.add_subparsers(dest=f"_{command.name}_command", metavar="COMMAND", title="commands")
        for child in command.commands:
            _add(nested, child, prog)


def build_parser(prog: str, description: str, commands: Sequence[Command],
                 arguments: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.ArgumentParser:
    """The parser of a service command: global ``arguments`` (if any), then one subparser per command."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    if arguments is not None:
        arguments(parser)
    parser.set_defaults(_command=None, _parser=parser)
    sub = parser.add_subparsers(dest="_command_name", metavar="COMMAND", title="commands")
    for command in commands:
        _add(sub, command, prog)
    return parser


def run_parsed(prog: str, commands: Sequence[Command], args: argparse.Namespace,
               errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run the command ``args`` selected (see :func:`service_main`)."""
    command: Command | None = args._command
    if command is None or command.run is None:
        chosen: argparse.ArgumentParser = args._parser
        names = [c.name for c in (command.commands if command is not None else commands)]
        chosen.print_usage(sys.stderr)
        print(f"{chosen.prog}: error: a command is required ({', '.join(names)})", file=sys.stderr)
        return 2
    caught: tuple[type[BaseException], ...] = (ConfigError, *errors)
    try:
        code = command.run(args)
    except caught as exc:
        print(f"{prog}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0 if code is None else int(code)


def service_main(prog: str, description: str, commands: Sequence[Command], argv: Sequence[str] | None = None,
                 *, arguments: Callable[[argparse.ArgumentParser], None] | None = None,
                 errors: tuple[type[BaseException], ...] = ()) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run its command; the exit status.

    Usage errors and ``--help`` leave through argparse's ``SystemExit`` (2 and 0); a
    :class:`~sipsec.config.ConfigError` or one of ``errors`` raised by the command is printed
    as one line and gives 1.
    """
    parser = build_parser(prog, description, commands, arguments)
    args = parser.parse_args(argv)
    return run_parsed(prog, commands, args, errors)


def configure_logging(level: str, fmt: str = "text", *, service: str = "", domain: str = "") -> None:
    """Every service's logging on stderr: ``level`` (``SIPSEC_LOG_LEVEL``) and ``fmt``
    (``SIPSEC_LOG_FORMAT``: ``json``, one object per line with ``service`` and ``domain`` in each,
    :mod:`sipsec.telemetry.logs`; or ``text``, :data:`LOG_FORMAT`)."""
    logs.configure(level, fmt, service=service, domain=domain)


def configure_from(config: object, service: str, domain: str = "") -> None:
    """:func:`configure_logging` from a service configuration's ``log_level`` and ``log_format``;
    tracing too, when ``OTEL_TRACES_EXPORTER`` asks for it (:mod:`sipsec.telemetry.tracing`)."""
    domain = domain or str(getattr(config, "domain", "") or "")
    configure_logging(str(getattr(config, "log_level", "INFO")), str(getattr(config, "log_format", "text")),
                      service=service, domain=domain)
    tracing.configure(service, domain)


async def serve_until_signalled(start: Callable[[], Awaitable[str]], drain: Callable[[], Awaitable[object]], *,
                                logger: str, out: TextIO | None = None) -> None:
    """Run a server the way every service does: SIGTERM/SIGINT handlers first (so that a signal
    during start-up is not lost), then ``start()``, whose result (the line saying where it
    listens) is printed on ``out`` (default stdout); on a signal, log and ``drain()``."""
    stop = stop_on_signals()
    announcement = await start()
    print(announcement, file=out or sys.stdout, flush=True)
    await stop.wait()
    logging.getLogger(logger).info("draining")
    await drain()


def serve_main(prog: str, description: str, config_cls: type[T], serve: Callable[[T], Coroutine[Any, Any, None]],
               argv: Sequence[str] | None = None) -> int:
    """The whole command of a service that only serves: ``<prog> serve [flags]``, logging set up
    from the configuration's ``log_level`` and ``log_format`` (:func:`configure_from`), ``serve(config)`` run on the services' event loop
    (:func:`sipsec.lifecycle.run`); an ``OSError`` (an address in use, a file missing) exits 1."""
    service = prog.removeprefix("sipsec-")

    def run(config: T) -> int:
        configure_from(config, service)
        lifecycle.run(serve(config))
        return 0

    return service_main(prog, description, [serve_command(config_cls, run, description=description)], argv,
                        errors=(OSError,))
