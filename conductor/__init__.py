# SPDX-License-Identifier: Apache-2.0
"""conductor: keeps a fleet of hardware nodes in sync with reality.

Importing any part of the package first refuses eventlet and selects
oslo.service's threading backend. The order matters: oslo.service must
be told its backend before anything imports ``oslo_service.service``
(importing oslo.messaging does), and futurist and oslo.service import
eventlet whenever it is installed unless the import is refused. Doing it
here, rather than in the entry points only, keeps it true whatever a
caller imports first (``conductor.rpcapi`` in another program, a driver
module in a test). A stray ``import eventlet`` then fails loudly instead
of silently changing how every socket behaves.

A program that loaded eventlet or chose a backend before importing us
(oslo-config-generator listing every library's options, the docs build)
is left as it is; the entry points (:mod:`conductor.cmd`) refuse to run
in that state.
"""

from conductor.common import no_eventlet

if not no_eventlet.loaded():
    no_eventlet.install()

    from oslo_service import backend
    from oslo_service.backend import exceptions as _backend_exc

    try:
        backend.init_backend(backend.BackendType.THREADING)
    except _backend_exc.BackendAlreadySelected:
        pass
