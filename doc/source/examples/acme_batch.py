# SPDX-License-Identifier: Apache-2.0
"""A driver that reads many power states in one call (doc/driver-api).

Its BMCs sit behind one management gateway that answers for many nodes
at once: ``get_power_states`` asks it once per batch.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from conductor.common import deadline
from conductor.common import exceptions
from conductor.drivers import base
from conductor import states


class Gateway:
    """Stands for the vendor's client; answers "on", "off" or None."""

    def __init__(self, answers: Mapping[str, str | None]) -> None:
        self.answers = dict(answers)
        self.calls: list[list[str]] = []

    def query(self, addresses: Sequence[str],
              timeout: float) -> dict[str, str | None]:
        self.calls.append(list(addresses))
        return {address: self.answers.get(address) for address in addresses}


class AcmeBatchPower(base.PowerInterface):

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def validate(self, node: base.DriverNode) -> None:
        if not node.driver_info.get("acme_address"):
            raise exceptions.InvalidParameterValue(
                err="Node %s: acme_address is required" % node.uuid)

    def get_power_states(self, nodes: Sequence[base.DriverNode]
                         ) -> dict[str, str | BaseException]:
        found: dict[str, str | BaseException] = {}
        asked = {}
        for node in nodes:
            try:
                self.validate(node)
            except exceptions.InvalidParameterValue as exc:
                found[node.uuid] = exc      # this node fails, not the batch
                continue
            asked[node.uuid] = node.driver_info["acme_address"]
        # One request for the whole batch, bounded by its deadline.
        left = deadline.remaining(default=30.0)
        answers = self.gateway.query(sorted(set(asked.values())),
                                     timeout=left or 0.0)
        for uuid, address in asked.items():
            answer = answers.get(address)
            if answer == "on":
                found[uuid] = states.POWER_ON
            elif answer == "off":
                found[uuid] = states.POWER_OFF
            else:
                found[uuid] = exceptions.PowerStateFailure(
                    err="gateway has no answer for BMC %s" % address)
        return found

    def get_power_state(self, node: base.DriverNode) -> str:
        answer = self.get_power_states([node])[node.uuid]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def set_power_state(self, node: base.DriverNode, target: str) -> None:
        raise NotImplementedError("not shown")

    def reboot(self, node: base.DriverNode) -> None:
        raise NotImplementedError("not shown")


class AcmeBatchDriver(base.BaseDriver):

    def __init__(self, gateway: Gateway | None = None) -> None:
        self.power = AcmeBatchPower(gateway or Gateway({}))
