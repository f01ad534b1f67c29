# SPDX-License-Identifier: Apache-2.0
"""Find unknown options and sections in the configuration files.

oslo.config ignores what it does not know: ``worker = 7`` in
``[DEFAULT]`` (meant as ``[conductor] workers``) or a ``[conducter]``
section are silently without effect. The master logs one warning per
problem at start-up, and ``conductor-status upgrade check`` reports them::

    for problem in validate.unknown_options(conf):
        LOG.warning("%s", problem)
    # /etc/conductor/conductor.conf: [DEFAULT] worker: unknown option
    #   (did you mean [conductor] workers?)

An option is known when it is registered on ``conf`` or listed by one of
:data:`NAMESPACES` (the libraries whose options the sample configuration
shows; some register theirs only when used, in a worker), under its name
or one of its deprecated names.
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import os
from typing import Any, Iterable, Iterator

from oslo_config import cfg
from stevedore import named

#: The ``oslo.config.opts`` namespaces whose options may appear in a
#: conductor configuration file (those of the sample configuration).
NAMESPACES = ("conductor", "oslo.db", "oslo.log", "oslo.messaging",
              "oslo.reports", "oslo.service.service")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One unknown option, or one unknown section with its options."""

    path: str
    section: str
    options: tuple[str, ...]
    #: True when the whole section is unknown.
    unknown_section: bool
    suggestion: str | None = None

    def __str__(self) -> str:
        if self.unknown_section:
            text = ("%s: [%s]: unknown section, its option(s) %s are "
                    "ignored" % (self.path, self.section,
                                 ", ".join(self.options) or "(none)"))
        else:
            text = "%s: [%s] %s: unknown option, ignored" % (
                self.path, self.section, self.options[0])
        if self.suggestion:
            text += " (did you mean %s?)" % self.suggestion
        return text


def config_files(conf: cfg.ConfigOpts) -> list[str]:
    """The files ``conf`` was parsed from, in order (dirs expanded)."""
    files = list(conf.config_file or [])
    for directory in conf.config_dir or []:
        files += sorted(glob.glob(os.path.join(directory, "*.conf")))
    return files


def _all_opts(conf: cfg.ConfigOpts, namespaces: Iterable[str]
              ) -> Iterator[tuple[str, cfg.Opt | None]]:
    """Every known option as ``(group, option)``.

    Every known group also comes as ``(group, None)``: it may have none.
    """
    # NOTE: ConfigOpts has no public listing of its registered options.
    for info in conf._opts.values():
        yield "DEFAULT", info["opt"]
    for name, group in conf._groups.items():
        yield name, None
        for info in group._opts.values():
            yield name, info["opt"]
    manager: named.NamedExtensionManager[Any] = named.NamedExtensionManager(
        "oslo.config.opts", names=list(namespaces), invoke_on_load=True,
        on_load_failure_callback=lambda *args: None)
    for extension in manager:
        for group, opts in extension.obj or ():
            name = group.name if isinstance(group, cfg.OptGroup) else group
            yield name or "DEFAULT", None
            for opt in opts:
                yield name or "DEFAULT", opt


def known_options(conf: cfg.ConfigOpts,
                  namespaces: Iterable[str] = NAMESPACES
                  ) -> dict[str, set[str]]:
    """``{group: option names}`` with deprecated names, dashes as ``_``."""
    known: dict[str, set[str]] = {}
    for group, opt in _all_opts(conf, namespaces):
        names = known.setdefault(_norm(group), set())
        if opt is None:
            continue
        names.add(_norm(opt.name))
        for old in opt.deprecated_opts:
            known.setdefault(_norm(old.group or group), set()).add(
                _norm(old.name or opt.name))
    return known


def deprecated_options(conf: cfg.ConfigOpts,
                       files: Iterable[str] | None = None,
                       namespaces: Iterable[str] = NAMESPACES) -> list[str]:
    """Options set in the files under an old name, or due for removal.

    :returns: one line per use: ``PATH: [group] name was renamed to
        [group] name`` or ``PATH: [group] name is deprecated for removal``
        (with the reason the option gives).
    """
    renamed: dict[tuple[str, str], str] = {}
    removal: dict[tuple[str, str], str] = {}
    for group, opt in _all_opts(conf, namespaces):
        if opt is None:
            continue
        for old in opt.deprecated_opts:
            was = (_norm(old.group or group), _norm(old.name or opt.name))
            if was != (_norm(group), _norm(opt.name)):
                renamed[was] = "[%s] %s" % (group, opt.name)
        if opt.deprecated_for_removal:
            removal[(_norm(group), _norm(opt.name))] = (
                opt.deprecated_reason or "")
    found = []
    for path in (config_files(conf) if files is None else files):
        sections: dict[str, dict[str, list[str]]] = {}
        try:
            cfg.ConfigParser(path, sections).parse()
        except (OSError, cfg.ParseError):
            continue
        for section, values in sections.items():
            for key in values:
                where = (_norm(section), _norm(key))
                if where in renamed:
                    found.append("%s: [%s] %s was renamed to %s"
                                 % (path, section, key, renamed[where]))
                elif where in removal:
                    found.append("%s: [%s] %s is deprecated for removal%s"
                                 % (path, section, key,
                                    ": " + removal[where]
                                    if removal[where] else ""))
    return found


def unknown_options(conf: cfg.ConfigOpts,
                    files: Iterable[str] | None = None,
                    namespaces: Iterable[str] = NAMESPACES
                    ) -> list[Problem]:
    """Every unknown option and section of the configuration files.

    One :class:`Problem` per unknown option of a known section, and one
    per unknown section (naming its options). A file that cannot be read
    or parsed is left to oslo.config, which already refused it.
    """
    known = known_options(conf, namespaces)
    problems: list[Problem] = []
    for path in (config_files(conf) if files is None else files):
        problems += _check_file(path, known)
    return problems


def file_sets(path: str, group: str, name: str) -> bool:
    """Whether the file at ``path`` sets ``[group] name``."""
    sections: dict[str, dict[str, list[str]]] = {}
    try:
        cfg.ConfigParser(path, sections).parse()
    except (OSError, cfg.ParseError):
        return False
    return any(_norm(section) == _norm(group)
               and any(_norm(key) == _norm(name) for key in values)
               for section, values in sections.items())


def _check_file(path: str, known: dict[str, set[str]]) -> Iterator[Problem]:
    sections: dict[str, dict[str, list[str]]] = {}
    try:
        cfg.ConfigParser(path, sections).parse()
    except (OSError, cfg.ParseError):
        return
    all_options = {(group, name) for group, names in known.items()
                   for name in names}
    for section, values in sections.items():
        group = _norm(section)
        names = [_norm(key) for key in values]
        if group not in known:
            match = difflib.get_close_matches(group, list(known), n=1)
            yield Problem(path, section, tuple(values), True,
                          "[%s]" % match[0] if match else None)
            continue
        for key, name in zip(values, names):
            if name in known[group]:
                continue
            yield Problem(path, section, (key,), False,
                          _suggest(group, name, known, all_options))


def _suggest(group: str, name: str, known: dict[str, set[str]],
             all_options: set[tuple[str, str]]) -> str | None:
    """The closest option: in the same section first, then anywhere."""
    match = difflib.get_close_matches(name, sorted(known[group]), n=1)
    if match:
        return "[%s] %s" % (group, match[0])
    flat = {"%s %s" % pair: pair for pair in all_options}
    by_name = difflib.get_close_matches(
        name, sorted({option for _, option in all_options}), n=1)
    if not by_name:
        return None
    groups = sorted(g for g, option in flat.values() if option == by_name[0])
    return "[%s] %s" % (groups[0], by_name[0])


def _norm(name: str) -> str:
    return name if name == "DEFAULT" else name.replace("-", "_").lower()
