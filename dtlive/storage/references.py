"""Named quality-test references on disk: ``<history>/references/NAME.nc`` next to the history store.

A reference (:func:`dtlive.core.references.make_reference`) is saved under a name (``dtlive reference save
NAME --start T --end T`` makes one from the history store's windows); :func:`list_references` reads back their
provenance; :class:`ReferenceFile` is what a service holds: the configured reference (``Config.reference``),
read again when the file changes, None while there is none (said once in the log, with what it means).

>>> import tempfile
>>> from dtlive.core.products import compute_products
>>> from dtlive.core.rows import Rows
>>> w = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0], tdc=[0]))
>>> w.attrs.update(window_id=5, first_orbit=0, last_orbit=99)
>>> folder = Path(tempfile.mkdtemp())
>>> path = save("cosmics", w, folder, created="2026-12-05T10:00:00Z")
>>> path.name, [(r["name"], r["windows"], r["created"]) for r in list_references(folder)]
('cosmics.nc', [('cosmics', 1, '2026-12-05T10:00:00Z')])
>>> int(ReferenceFile("cosmics", folder).get().total_hits), ReferenceFile("nothing", folder).get() is None
(1, True)
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import xarray as xr

from dtlive.core.references import load_reference, make_reference, save_reference

log = logging.getLogger(__name__)

SUFFIX = ".nc"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def reference_dir(history_path: str | os.PathLike | None = None) -> Path:
    """Where named references live: ``references`` in the history store's folder (default: DTLIVE_HISTORY).

    >>> str(reference_dir("/data/history"))
    '/data/history/references'
    """
    if history_path is None:
        from dtlive.storage.history import default_path

        history_path = default_path()
    return Path(history_path).expanduser() / "references"


def reference_path(name: str, directory: str | os.PathLike | None = None) -> Path:
    """The file of a named reference (ValueError for a name that is not a plain file name).

    >>> reference_path("run 5", "/tmp")
    Traceback (most recent call last):
    ...
    ValueError: a reference name is letters, digits, '_', '.' and '-' (not starting with them): 'run 5'
    """
    if not _NAME.match(name or "") or name.endswith(SUFFIX):
        raise ValueError(f"a reference name is letters, digits, '_', '.' and '-' (not starting with them): {name!r}")
    return Path(directory if directory is not None else reference_dir()) / f"{name}{SUFFIX}"


def save(name: str, windows: xr.Dataset, directory: str | os.PathLike | None = None, *, detector: dict | None = None,
         label: str | None = None, created: str | None = None, overwrite: bool = False) -> Path:
    """Make the reference of ``windows`` (stacked or one) and write it as ``NAME.nc``, atomically; return the path.

    ``label`` defaults to the name, ``created`` to now (ISO UTC). An existing reference is only replaced with
    ``overwrite`` (FileExistsError otherwise).

    >>> import tempfile
    >>> from dtlive.core.products import compute_products
    >>> from dtlive.core.rows import Rows
    >>> window = compute_products(Rows.from_columns(head=[2], fpga=[0], channel=[3], orbit=[7], bx=[0], tdc=[0]))
    >>> folder = tempfile.mkdtemp()
    >>> save("clean", window, folder).name, [r["name"] for r in list_references(folder)]
    ('clean.nc', ['clean'])
    """
    path = reference_path(name, directory)
    if path.exists() and not overwrite:
        raise FileExistsError(f"reference {name!r} exists ({path}); --overwrite replaces it")
    created = created or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ref = make_reference(windows, detector=detector, label=label or name, created=created)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_reference(ref, tmp)
        os.replace(tmp, path)  # a service reading it sees the old file or the new one, never half of one
    finally:
        tmp.unlink(missing_ok=True)
    return path


def list_references(directory: str | os.PathLike | None = None) -> list[dict]:
    """The saved references, by name: ``name, label, windows, seconds, first_start, last_end, created, path``.

    >>> import tempfile
    >>> list_references(tempfile.mkdtemp())
    []
    """
    folder = Path(directory if directory is not None else reference_dir())
    out = []
    for path in sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []:
        try:
            with xr.open_dataset(path, engine="h5netcdf") as ds:
                a = dict(ds.attrs)
        except (OSError, ValueError) as exc:
            log.warning("reference %s cannot be read: %s", path, exc)
            continue
        out.append({"name": path.name[: -len(SUFFIX)], "label": a.get("label", ""), "windows": int(a.get("windows", 0)),
                    "seconds": float(a.get("seconds", 0.0)), "first_start": a.get("first_start", ""),
                    "last_end": a.get("last_end", ""), "created": a.get("created", ""), "path": str(path)})
    return out


class ReferenceFile:
    """The reference a service judges against: read when first asked, again whenever the file changes.

    ``name`` empty: no reference on purpose. A missing (or unreadable) file gives None and one log line until
    it appears, then the reference is used from the next :meth:`get` on.

    >>> import tempfile
    >>> ReferenceFile("", tempfile.mkdtemp()).get() is None  # no reference wanted
    True
    """

    def __init__(self, name: str, directory: str | os.PathLike | None = None):
        self.name = name
        self.path = reference_path(name, directory) if name else None
        self._stamp: tuple[int, int] | None = None
        self._ref: xr.Dataset | None = None
        self._said: str | None = None

    def get(self) -> xr.Dataset | None:
        """The current reference (None while there is none)."""
        if self.path is None:
            self._say("none", "no quality-test reference configured: only tests that need no reference judge")
            return None
        try:
            st = self.path.stat()
        except OSError:
            self._ref, self._stamp = None, None
            self._say("missing", f"quality-test reference {self.name!r} not found ({self.path}): only tests that "
                      f"need no reference judge until it is saved (dtlive reference save {self.name} ...)")
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                self._ref = load_reference(self.path)
            except (OSError, ValueError) as exc:
                self._ref = None
                self._say("broken", f"quality-test reference {self.path} cannot be read ({exc}): only tests that "
                          "need no reference judge")
                return None
            self._stamp = stamp
            log.info("quality-test reference %r: %s windows, %s .. %s", self.name, self._ref.attrs.get("windows"),
                     self._ref.attrs.get("first_start"), self._ref.attrs.get("last_end"))
            self._said = None
        return self._ref

    def _say(self, what: str, text: str) -> None:
        if self._said != what:
            log.warning(text)
            self._said = what


def save_from_history(name: str, start, end, *, history=None, ledger=None, keep_bad: bool = False,
                      processor: str | None = None, detector: dict | None = None, label: str | None = None,
                      overwrite: bool = False) -> tuple[Path, int]:
    """Save the reference of the history store's windows starting in ``[start, end)``; return (path, windows).

    Bad periods of the ledger are left out unless ``keep_bad``. Windows of one processor only: ``processor``
    picks it, and windows of several processors without it are a ValueError (summing them would count the
    same detector time twice).

    >>> path, n = save_from_history("run591", "2023-06-01T10:00Z", "2023-06-01T11:00Z")  # doctest: +SKIP
    """
    import json

    import numpy as np

    from dtlive.storage import history as hist

    store = history if history is not None else hist.HistoryStore()
    ds = hist.load(start, end, exclude_bad=not keep_bad, store=store, ledger=ledger)
    if ds is None:
        raise ValueError(f"no windows in the history store ({store.path}) from {start} to {end}")
    procs = np.array([(json.loads(p) if p else {}).get("processor") or "" for p in ds.provenance.values.tolist()])
    if processor is not None:
        ds = ds.isel(time=np.flatnonzero(procs == processor))
        if not ds.sizes["time"]:
            raise ValueError(f"no windows of processor {processor!r} from {start} to {end} "
                             f"(found: {', '.join(sorted(set(procs.tolist())))})")
    elif len(set(procs.tolist())) > 1:
        raise ValueError(f"windows of several processors ({', '.join(sorted(set(procs.tolist())))}): "
                         "choose one with --processor")
    path = save(name, ds, reference_dir(store.path), detector=detector, label=label, overwrite=overwrite)
    return path, int(ds.sizes["time"])
