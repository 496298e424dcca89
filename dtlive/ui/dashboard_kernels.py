"""Kernels of the Voilà dashboard go away with their page.

Every visit of the dashboard page starts a kernel (~175 MB) that keeps updating its widgets from
background threads, so the usual idle culling never sees it idle. :class:`DashboardKernelManager`
shuts a kernel down once no page has been connected to it for ``unattended_timeout`` seconds after
its last websocket closed (tab closed, browser gone, network lost), or for ``first_connect_timeout``
seconds when its page never connected (the page was fetched but never shown).
A page that reconnects in time keeps its kernel. Ordinary idle culling
(``MappingKernelManager.cull_idle_timeout``) still applies; the periodic culler also runs this check.

``dtlive dashboard`` starts Voilà with it (see :func:`dtlive.deploy.cli.voila_command`)::

    voila dashboard.ipynb \\
        --VoilaConfiguration.multi_kernel_manager_class=dtlive.ui.dashboard_kernels.DashboardKernelManager \\
        --DashboardKernelManager.unattended_timeout=10 --MappingKernelManager.cull_idle_timeout=3600 \\
        --MappingKernelManager.cull_interval=5

>>> DashboardKernelManager(unattended_timeout=3.0).unattended_timeout
3.0
"""

from __future__ import annotations

import asyncio
import time

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado.ioloop import IOLoop
from traitlets import Float


class DashboardKernelManager(AsyncMappingKernelManager):
    """An ``AsyncMappingKernelManager`` that shuts down kernels no page is connected to.

    >>> km = DashboardKernelManager(unattended_timeout=5.0)
    >>> km.unattended_timeout, km.first_connect_timeout
    (5.0, 60.0)
    >>> import threading
    >>> done = []  # a loop of its own in a thread: the caller's thread may be running one already
    >>> t = threading.Thread(target=lambda: done.append(asyncio.run(km.shutdown_if_unattended("no-such-kernel"))))
    >>> t.start(); t.join(30); done  # gone already: nothing to shut down
    [False]
    """

    unattended_timeout = Float(
        10.0, config=True,
        help="Seconds a kernel may live with no page connected (its page closed, or never connected) before it is "
             "shut down; 0 keeps such kernels (only idle culling applies).")

    first_connect_timeout = Float(
        60.0, config=True,
        help="Seconds a kernel may wait for its page's first connection (a slow browser loading the page) before "
             "it is shut down; at least unattended_timeout.")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._unattended_since: dict[str, float] = {}  # kernel id -> monotonic time its last page went away
        self._connected_once: set[str] = set()

    def notify_connect(self, kernel_id: str) -> None:
        super().notify_connect(kernel_id)
        self._unattended_since.pop(kernel_id, None)
        self._connected_once.add(kernel_id)

    def notify_disconnect(self, kernel_id: str) -> None:
        super().notify_disconnect(kernel_id)
        if self.unattended_timeout > 0 and self._kernel_connections.get(kernel_id, 1) <= 0:
            self._unattended_since[kernel_id] = time.monotonic()
            IOLoop.current().call_later(self.unattended_timeout,
                                        lambda: asyncio.ensure_future(self.shutdown_if_unattended(kernel_id)))

    async def shutdown_if_unattended(self, kernel_id: str) -> bool:
        """Shut the kernel down if no page has been connected to it for ``unattended_timeout``; True if it was.

        A busy kernel (still rendering its page) restarts the clock.
        """
        now = time.monotonic()
        if kernel_id not in self:
            self._unattended_since.pop(kernel_id, None)
            self._connected_once.discard(kernel_id)
            return False
        if self._kernel_connections.get(kernel_id, 0) > 0:
            self._unattended_since.pop(kernel_id, None)
            return False
        if getattr(self._kernels[kernel_id], "execution_state", None) == "busy":
            self._unattended_since[kernel_id] = now
            return False
        since = self._unattended_since.setdefault(kernel_id, now)
        limit = self.unattended_timeout
        if kernel_id not in self._connected_once:
            limit = max(limit, self.first_connect_timeout)
        if now - since < limit - 0.1:  # the timer may fire a little early
            return False
        self.log.warning("Shutting down dashboard kernel %s: no page connected for %.0f s", kernel_id, now - since)
        self._unattended_since.pop(kernel_id, None)
        self._connected_once.discard(kernel_id)
        await self.shutdown_kernel(kernel_id)
        return True

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        if self.unattended_timeout > 0 and await self.shutdown_if_unattended(kernel_id):
            return
        await super().cull_kernel_if_idle(kernel_id)
