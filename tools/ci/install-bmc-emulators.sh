#!/bin/sh
# Install the BMC peers and clients of the driver functional tests and of
# tools/bench_drivers.py: ipmitool, FreeIPMI's ipmipower and OpenIPMI's
# ipmi_sim (Debian packages ipmitool, freeipmi-tools and openipmi), and check that sushy-tools' emulator is
# importable by the Python that runs the tests ($PYTHON, default python3;
# SKIP_PYTHON_CHECK=1 skips that check, for when tox installs sushy-tools
# into its own environment). The package lists are refreshed only when an
# install fails without it.
set -eu

PYTHON=${PYTHON:-python3}
missing=""
command -v ipmitool >/dev/null 2>&1 || missing="$missing ipmitool"
command -v ipmi_sim >/dev/null 2>&1 || missing="$missing openipmi"
command -v ipmipower >/dev/null 2>&1 || missing="$missing freeipmi-tools"

if [ -n "$missing" ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086  # $missing is a list of package names
    if ! $sudo apt-get install -y -q --no-install-recommends $missing; then
        $sudo apt-get update -q
        $sudo apt-get install -y -q --no-install-recommends $missing
    fi
fi

if [ "${SKIP_PYTHON_CHECK:-0}" = 1 ]; then
    echo "BMC emulators ready: $(command -v ipmitool)" \
         "$(command -v ipmipower) $(command -v ipmi_sim)"
    exit 0
fi
if ! "$PYTHON" -c "import sushy_tools.emulator.main" 2>/dev/null; then
    echo "sushy-tools is not importable by $PYTHON:" \
         "$PYTHON -m pip install sushy-tools" >&2
    exit 1
fi
echo "BMC emulators ready: $(command -v ipmitool) $(command -v ipmipower)" \
     "$(command -v ipmi_sim) sushy-tools for $PYTHON"
