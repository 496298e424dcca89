"""Where a thread is now: the innermost frames of its stack, for a service that ends itself because it hung.

>>> import threading
>>> "thread_stack" in thread_stack(threading.get_ident())
True
>>> thread_stack(-1)
'(the thread has ended)'
"""

from __future__ import annotations

import sys
import traceback


def thread_stack(ident: int | None, limit: int = 8) -> str:
    """The ``limit`` innermost frames of thread ``ident`` as ``file:line in function`` lines, innermost last.

    >>> print(thread_stack(None))
    (no thread)
    """
    if ident is None:
        return "(no thread)"
    frame = sys._current_frames().get(ident)
    if frame is None:
        return "(the thread has ended)"
    frames = traceback.extract_stack(frame)[-limit:]
    return "\n".join(f"  {f.filename}:{f.lineno} in {f.name}" for f in frames)
