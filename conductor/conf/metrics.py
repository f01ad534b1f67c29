# SPDX-License-Identifier: Apache-2.0
"""Options of the [metrics] group: Prometheus metrics and /healthz."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "metrics"

opts: list[cfg.Opt] = [
    cfg.HostAddressOpt(
        "bind_host",
        default="127.0.0.1",
        help="Address the master process serves /metrics (Prometheus "
             "exposition of every worker of this host) and /healthz on. "
             "The default keeps them local; use 0.0.0.0 or :: to let a "
             "remote Prometheus scrape them."),
    cfg.PortOpt(
        "port",
        min=1,
        help="TCP port of /metrics and /healthz. Unset (the default) "
             "disables both; 0 is refused. Possible values: 1-65535."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts, group=GROUP)


def list_opts() -> list[cfg.Opt]:
    return opts
