# SPDX-License-Identifier: Apache-2.0
"""Versioned notifications of power changes (oslo.messaging, messagingv2).

Event types, after Ironic's:

``baremetal.node.power_set.start`` / ``.end`` / ``.error``
    A power action (``power on|off|reboot``) or a forced correction by
    power sync is sent to the BMC / succeeded / failed.
``baremetal.node.power_state_corrected.success``
    Power sync found the hardware in another state than recorded and
    recorded the hardware's state.

Each payload is versioned: ``conductor_object.name``, ``.namespace``,
``.version`` and ``.data``; the data names the node (``uuid``, ``name``),
its ``driver``, ``power_state``, ``target_power_state`` and, by event,
``from_power_state`` or ``last_error``. Nothing from ``driver_info`` is
ever sent.

A worker builds one :class:`Sender` in ``start()`` and installs it; the
recording functions are cheap no-ops without one::

    sender = notifications.Sender.from_conf(conf, host)   # None: disabled
    notifications.install(sender); sender.start()
    notifications.power_set("start", node, "power on")
    ...
    sender.stop(timeout); notifications.install(None)

Notifications are queued (``[notifications] queue_size``) and sent by a
thread of their own, so a slow or absent broker never delays power sync
or power actions; one that does not fit is dropped, logged and counted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from oslo_config import cfg
import oslo_messaging as messaging

from conductor.common import metrics
from conductor.common import rpc

LOG = logging.getLogger(__name__)

PUBLISHER = "conductor"
#: Version of every payload below; raise the minor for added fields.
PAYLOAD_VERSION = "1.0"
_PAYLOAD_NAMES = {"power_set": "NodeSetPowerStatePayload",
                  "power_state_corrected": "NodeCorrectedPowerStatePayload"}
_PHASES = {"start": "info", "end": "info", "error": "error",
           "success": "info"}


def _payload(action: str, node: Any, **extra: Any) -> dict[str, Any]:
    data = {"uuid": getattr(node, "uuid", None),
            "name": getattr(node, "name", None),
            "driver": getattr(node, "driver", None),
            "power_state": getattr(node, "power_state", None),
            "target_power_state": getattr(node, "target_power_state",
                                          None)}
    data.update(extra)
    return {"conductor_object.name": _PAYLOAD_NAMES[action],
            "conductor_object.namespace": "conductor",
            "conductor_object.version": PAYLOAD_VERSION,
            "conductor_object.data": data}


class Sender:
    """Sends queued notifications from one thread of its own.

    :param notifier: an ``oslo_messaging.Notifier`` (or anything with
        ``info`` and ``error`` taking ``(ctxt, event_type, payload)``).
    :param queue_size: notifications kept waiting at most.
    """

    def __init__(self, notifier: Any, queue_size: int) -> None:
        self._notifier = notifier
        self._queue: queue.Queue[tuple[str, str, dict[str, Any]] | None] = \
            queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._transport: Any = None
        self._dropped_logged = 0.0

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, host: str) -> "Sender | None":
        """A sender when ``[notifications] enabled`` and a transport is set.

        :raises: oslo.messaging's errors for a malformed transport URL.
        """
        if not conf.notifications.enabled:
            return None
        rpc.register_opts(conf)
        if not (conf.oslo_messaging_notifications.transport_url
                or rpc.enabled(conf)):
            LOG.warning("[notifications] enabled is set but no transport "
                        "is: set [oslo_messaging_notifications] "
                        "transport_url or [DEFAULT] transport_url; no "
                        "notification is sent")
            return None
        transport = messaging.get_notification_transport(conf)
        notifier = messaging.Notifier(
            transport, publisher_id="%s.%s" % (PUBLISHER, host),
            driver="messagingv2", topics=list(conf.notifications.topics),
            # NOTE: bounded: a broker outage fails and drops
            # notifications instead of blocking the sender for ever.
            retry=3)
        sender = cls(notifier, conf.notifications.queue_size)
        sender._transport = transport
        return sender

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run,
                                        name="notifications", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Send what is queued within ``timeout`` seconds, then stop."""
        if self._thread is not None:
            try:
                self._queue.put(None, timeout=max(0.0, timeout))
            except queue.Full:
                pass
            self._thread.join(timeout)
            self._thread = None
        if self._transport is not None:
            self._transport.cleanup()
            self._transport = None

    def emit(self, priority: str, event_type: str,
             payload: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait((priority, event_type, payload))
        except queue.Full:
            metrics.notification(event_type, "dropped")
            now = time.monotonic()
            if now - self._dropped_logged > 60:
                self._dropped_logged = now
                LOG.warning("Notification queue full; dropping %s (and "
                            "others for a minute without a log)",
                            event_type)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            priority, event_type, payload = item
            try:
                getattr(self._notifier, priority)({}, event_type, payload)
                metrics.notification(event_type, "sent")
            except Exception as exc:
                metrics.notification(event_type, "failed")
                LOG.warning("Could not send notification %(event)s: "
                            "%(err)s", {"event": event_type, "err": exc})


_sender: Sender | None = None


def install(sender: Sender | None) -> None:
    """Make ``sender`` the one this process's notifications go to."""
    global _sender
    _sender = sender


def _emit(action: str, phase: str, payload: dict[str, Any]) -> None:
    sender = _sender
    if sender is not None:
        sender.emit(_PHASES[phase], "baremetal.node.%s.%s" % (action, phase),
                    payload)


def power_set(phase: str, node: Any, target: str,
              error: str | None = None) -> None:
    """``baremetal.node.power_set.<phase>``: start, end or error.

    :param node: the node (any object with ``uuid``, ``name``, ...).
    :param target: the power state asked for.
    """
    if _sender is None:
        return
    extra: dict[str, Any] = {"target_power_state": target}
    if error is not None:
        extra["last_error"] = error
    _emit("power_set", phase, _payload("power_set", node, **extra))


def power_state_corrected(node: Any, old: str | None, new: str) -> None:
    """``baremetal.node.power_state_corrected.success``: record follows."""
    if _sender is None:
        return
    _emit("power_state_corrected", "success",
          _payload("power_state_corrected", node, power_state=new,
                   from_power_state=old))
