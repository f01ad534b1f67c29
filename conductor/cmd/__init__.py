"""Entry points. Importing this package selects the threading backend.

oslo.service must be told which backend to use before anything imports
``oslo_service.service`` (importing oslo.messaging does), so this runs
first, before any other conductor or oslo import in an entry point.
Eventlet is then refused outright: the conductor runs on native threads
only, and a stray ``import eventlet`` must fail loudly rather than
silently change how every socket behaves.
"""

from conductor.common import no_eventlet

no_eventlet.install()

from oslo_service import backend  # noqa: E402

backend.init_backend(backend.BackendType.THREADING)
