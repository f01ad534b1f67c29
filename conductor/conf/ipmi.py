# SPDX-License-Identifier: Apache-2.0
"""Options of the [ipmi] group: the ipmitool-based ``ipmi`` driver.

Every call is also bounded by ``[conductor] power_state_timeout``: ipmitool
is killed when the deadline comes, whatever these options say.
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
             "(IPMI 2.0, lanplus interface) per BMC call."),
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
