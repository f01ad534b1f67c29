# SPDX-License-Identifier: Apache-2.0
"""Options of the [redfish] group: the sushy-based ``redfish`` driver.

Every call is also bounded by ``[conductor] power_state_timeout``: all the
attempts and waits of one call fit in what is left of its deadline.
"""

from __future__ import annotations

from oslo_config import cfg

GROUP = "redfish"

opts: list[cfg.Opt] = [
    cfg.IntOpt(
        "connection_attempts",
        default=2,
        min=1,
        max=10,
        help="Attempts at each Redfish read (GET) that fails to connect, "
             "times out or gets an HTTP 5xx answer. 1 means no retry. "
             "Power actions (POST) are sent once: a repeated reset could "
             "be applied twice. A retry that would not fit in what is left "
             "of the deadline is not made. Minimum 1, maximum 10 (sushy's "
             "own default of 10 retries 3 s apart would hold a thread for "
             "30 s)."),
    cfg.FloatOpt(
        "connection_retry_interval",
        default=1.0,
        min=0.0,
        max=60.0,
        help="Seconds between two attempts at a Redfish read. 0 retries "
             "at once. Minimum 0, maximum 60."),
    cfg.FloatOpt(
        "connect_timeout",
        default=5.0,
        min=0.0,
        max=300.0,
        help="Seconds a Redfish request may wait for its TCP connection to "
             "the BMC to open, apart from the time it may then wait for the "
             "answer (what is left of [conductor] power_state_timeout). A "
             "BMC address that drops connections then costs a thread this "
             "long per attempt, not the whole deadline. 0 bounds the "
             "connection by the deadline only. Minimum 0, maximum 300."),
    cfg.StrOpt(
        "auth_type",
        default="auto",
        choices=[
            ("auto", "Open a Redfish session; if the BMC refuses one, use "
                     "HTTP basic authentication."),
            ("session", "Redfish sessions only."),
            ("basic", "HTTP basic authentication on every request."),
        ],
        help="How the driver authenticates to the BMC."),
    cfg.IntOpt(
        "connection_cache_size",
        default=1000,
        min=0,
        help="Redfish clients (and their sessions) kept open per worker "
             "process, one per BMC address, user, password and CA setting; "
             "the least recently used is closed beyond this. 0 opens a new "
             "client (and session) for every call."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts, group=GROUP)


def list_opts() -> list[cfg.Opt]:
    return opts
