"""Run 591, the real run the notebooks show, or the cosmic-muon simulator where its file is not at hand.

Run 591 of the four-chamber telescope (``run000591_hits.csv``, 159,616 hits in ~30 s) is not shipped with
dtlive: :func:`load_run591` reads it from a path you give (the file, or the folder holding it), else from the
``data_dir`` setting (``DTLIVE_DATA_DIR``). Where neither has it, on Binder for instance, it returns simulated
rows instead, named as such, with a note that says what was looked for and how to point at the real file, so
a notebook runs top to bottom either way and says which sample it shows.

>>> sample = load_run591(None, data_dir="", fallback_s=0.2)
>>> sample.simulated, sample.name
(True, 'simulation (0.2 s, seed 591)')
>>> sample.note.split(":")[0], "DTLIVE_DATA_DIR" in sample.note
('NOTE', True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dtlive.core.decode import read_csv
from dtlive.core.rows import Rows
from dtlive.core.simulate import simulate

RUN591_FILE = "run000591_hits.csv"
RUN591_NAME = "run 591"


@dataclass(frozen=True)
class Sample:
    """DAQ rows (hits and ancillary words, as read) with what they are.

    ``name`` is ``"run 591"`` or ``"simulation (N s, seed S)"``; ``path`` the file read (None when simulated);
    ``note`` one line saying which it is and, for the simulator, why and how to get the real run.

    >>> s = Sample("run 591", Rows.from_columns(head=[2], fpga=[0], channel=[1], orbit=[5], bx=[0], tdc=[0]),
    ...            Path("run000591_hits.csv"), "reading run000591_hits.csv")
    >>> s.simulated, len(s.rows)
    (False, 1)
    """

    name: str
    rows: Rows
    path: Path | None
    note: str

    @property
    def simulated(self) -> bool:
        """True when the rows come from the simulator, not from the file."""
        return self.path is None


def find_run591(path: str | os.PathLike[str] | None = None, data_dir: str | os.PathLike[str] | None = None
                ) -> tuple[Path | None, list[Path]]:
    """The run-591 file at ``path`` (the file, or a folder holding it), else in ``data_dir``; and where it looked.

    Returns ``(file or None, places looked at)``; empty strings count as not given.

    >>> find_run591("/nowhere", data_dir="")
    (None, [PosixPath('/nowhere/run000591_hits.csv')])
    """
    looked: list[Path] = []
    for given in (path, data_dir):
        if given is None or str(given) == "":
            continue
        p = Path(given).expanduser()
        candidate = p if p.suffix == ".csv" else p / RUN591_FILE
        looked.append(candidate)
        if candidate.is_file():
            return candidate, looked
        if path is not None and str(path) != "":
            break  # a path the user gave that does not hold the file: say so, do not go on to the setting
    return None, looked


def load_run591(path: str | os.PathLike[str] | None = None, *, data_dir: str | os.PathLike[str] | None = None,
                fallback_s: float = 30.0, seed: int = 591) -> Sample:
    """Run 591's rows from ``path`` or ``data_dir`` (see :func:`find_run591`), else ``fallback_s`` s simulated.

    Never raises for a missing file: the simulator stands in and :attr:`Sample.note` says so.

    >>> s = load_run591("/no/such/folder", fallback_s=0.2, seed=7)
    >>> s.simulated, s.name, s.note.split(":")[0]
    (True, 'simulation (0.2 s, seed 7)', 'NOTE')
    """
    found, looked = find_run591(path, data_dir)
    if found is not None:
        return Sample(RUN591_NAME, read_csv(str(found)), found, f"reading {RUN591_NAME} from {found.resolve()}")
    name = f"simulation ({fallback_s:g} s, seed {seed})"
    where = (", ".join(str(p) for p in looked) if looked
             else "no path given, data_dir / DTLIVE_DATA_DIR not set")
    verb = "not found" if looked else "not looked for"
    note = (f"NOTE: {RUN591_NAME} was {verb} ({where}): showing {name} instead. Set DTLIVE_DATA_DIR to the folder "
            f"holding {RUN591_FILE}, or give its path, to see the real run.")
    return Sample(name, simulate(fallback_s, seed=seed), None, note)
