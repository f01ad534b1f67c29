# SPDX-License-Identifier: Apache-2.0
"""Options of the [notifications] group: versioned notifications."""

from __future__ import annotations

from oslo_config import cfg

GROUP = "notifications"

opts: list[cfg.Opt] = [
    cfg.BoolOpt(
        "enabled",
        default=False,
        help="Send oslo.messaging versioned notifications of power changes "
             "(baremetal.node.power_set.start|end|error and "
             "baremetal.node.power_state_corrected.success). They go over "
             "[oslo_messaging_notifications] transport_url, or [DEFAULT] "
             "transport_url when that is unset; with neither set nothing "
             "is sent and the log says so once per worker."),
    cfg.ListOpt(
        "topics",
        default=["versioned_notifications"],
        help="Topics the notifications are sent to (the messagingv2 "
             "driver)."),
    cfg.IntOpt(
        "queue_size",
        default=1000,
        min=1,
        help="Notifications a worker keeps waiting for the broker. A "
             "notification beyond it is dropped and counted (metric "
             "conductor_notifications_dropped_total), so a broker outage "
             "never slows power sync or power actions."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts, group=GROUP)


def list_opts() -> list[cfg.Opt]:
    return opts
