# SPDX-License-Identifier: Apache-2.0
"""Options of the [ipmi] group: the ``ipmi`` driver.

Batch reads run FreeIPMI's ``ipmipower``, single reads and power actions
``ipmitool``. Every call is also bounded by ``[conductor]
power_state_timeout``: the program is killed when the deadline comes,
whatever these options say.
"""

from __future__ import annotations

from oslo_config import cfg

GROUP = "ipmi"

opts: list[cfg.Opt] = [
    cfg.StrOpt(
        "ipmitool_path",
        default="ipmitool",
        help="The ipmitool executable: an absolute path, or a name looked "
             "up in PATH. The ipmi driver runs one ipmitool process "
             "(IPMI 2.0, lanplus interface) per power action and per "
             "single read."),
    cfg.BoolOpt(
        "ipmitool_short_registry",
        default=True,
        help="Run ipmitool with HOME set to a private directory holding a "
             "one-entry IANA enterprise-numbers registry, which ipmitool "
             "then reads instead of the system's 4.7 MB one: about 6 ms "
             "of CPU per call instead of 24. False runs ipmitool with the "
             "conductor's own HOME."),
    cfg.StrOpt(
        "power_status_tool",
        default="ipmipower",
        choices=[
            ("ipmipower", "Power sync reads nodes in batches, one FreeIPMI "
                          "ipmipower run per batch (about 0.5 ms of CPU "
                          "per node)."),
            ("ipmitool", "Power sync reads every node with its own "
                         "ipmitool run (6 to 24 ms of CPU per node)."),
        ],
        help="How power sync reads the power state of IPMI nodes. Takes "
             "effect at the next start."),
    cfg.StrOpt(
        "ipmipower_path",
        default="ipmipower",
        help="The FreeIPMI ipmipower executable (Debian package "
             "freeipmi-tools): an absolute path, or a name looked up in "
             "PATH."),
    cfg.ListOpt(
        "freeipmi_workaround_flags",
        default=[],
        help="FreeIPMI workaround flags passed to ipmipower as "
             "--workaround-flags, for BMCs that deviate from the IPMI "
             "specification (see 'man ipmipower'). Real BMCs usually need "
             "none; OpenIPMI's ipmi_sim needs opensesspriv. Empty (the "
             "default) passes none."),
    cfg.FloatOpt(
        "freeipmi_session_timeout",
        default=6.0,
        min=0.1,
        max=60.0,
        help="Seconds ipmipower keeps trying a BMC that does not answer "
             "before it reports that node as failed (its "
             "--session-timeout). Capped by what is left of the call's "
             "deadline. Minimum 0.1, maximum 60."),
    cfg.FloatOpt(
        "freeipmi_retransmission_timeout",
        default=1.0,
        min=0.05,
        max=30.0,
        help="Seconds ipmipower waits for an answer before it sends a "
             "request again (its --retransmission-timeout); it retries "
             "until freeipmi_session_timeout, so a silent BMC gets about "
             "session / retransmission attempts (6 with the defaults). "
             "Minimum 0.05, maximum 30."),
    cfg.IntOpt(
        "retransmit_timeout",
        default=1,
        min=1,
        max=30,
        help="Seconds ipmitool waits for an answer to its first attempt "
             "at a request before it tries again (its -N option). "
             "Minimum 1, maximum 30."),
    cfg.IntOpt(
        "retransmit_attempts",
        default=2,
        min=1,
        max=10,
        help="Attempts ipmitool makes at each request before it gives up "
             "(its -R option). Each attempt waits one second longer than "
             "the one before, and ipmitool tries two requests before it "
             "reports a BMC as silent, so a BMC that never answers fails "
             "after about 2 x (R x N + R x (R - 1) / 2) seconds, with R "
             "this option and N retransmit_timeout: 6 s with the defaults. "
             "Minimum 1 (ipmitool reads 0 as its own default of 4), "
             "maximum 10."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(opts, group=GROUP)


def list_opts() -> list[cfg.Opt]:
    return opts
