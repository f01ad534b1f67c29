# SPDX-License-Identifier: Apache-2.0
"""Options of the [hooks] group: operator lifecycle hooks."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "hooks"

opts: list[cfg.Opt] = [
    cfg.StrOpt(
        "hooks_dir",
        help="Directory of executable hooks named NN-name, run in NN order "
             "at each lifecycle phase. Unset (the default) runs only the "
             "hooks registered as 'conductor.hooks' entry points."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts, group=GROUP)


def list_opts() -> list[cfg.Opt]:
    return opts
