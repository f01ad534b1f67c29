# SPDX-License-Identifier: Apache-2.0
"""Entry points: ``conductor`` and ``conductor-manage``.

Importing :mod:`conductor` (which happens first) refused eventlet and
selected oslo.service's threading backend; an entry point also refuses to
run at all when eventlet was loaded, or another backend chosen, before.
"""

from conductor.common import no_eventlet

no_eventlet.install()

from oslo_service import backend  # noqa: E402

backend.init_backend(backend.BackendType.THREADING)
