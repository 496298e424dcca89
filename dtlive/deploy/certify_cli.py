"""``dtlive certify``: list the good/bad verdicts of detector runs and lumi blocks, override them, export the
good ranges as JSON. The parser and handler of one command; the work is :mod:`dtlive.storage.certification`'s.

>>> import argparse
>>> parser = argparse.ArgumentParser(prog="dtlive")
>>> add_parser(parser.add_subparsers(dest="command"))
>>> parser.parse_args(["certify", "set", "--run", "3", "--chamber", "all", "--bad", "--reason", "HV trip",
...                    "--by", "shifter"]).good
False
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from dtlive.config import Config

DESCRIPTION = f"""\
Certify data for analysis: every detector run (`dtlive runs --detector`) and every lumi block (the
`judge_windows` windows the recorder judges together) gets a good/bad verdict per chamber.

Automatic rule: a block is good for a chamber when the quality tests gave it a status <= certify_max_status
(default {Config.certify_max_status}: 0 ok, 1 minor, 2 degraded are good; 3 poor, 4 bad and 'not judged' are
not). A run is good for a chamber when all its blocks are. A person overrides the automatic verdict with
`set` (who, when and why are kept, never changed or deleted); where overrides cover the same block and chamber
the later one wins, and automatic verdicts computed again never undo them.

  list     runs and blocks with each chamber's verdict (good / BAD, the status in brackets; * = decided by a
           person) and the overrides
  set      override: --run N or --start T [--end T] (blocks overlapping [T, T)), --chamber C or all,
           --good or --bad, --reason TEXT, --by NAME
  export   the good ranges as JSON (schema dtlive.certification/1): "runs" holds, per chamber ("chamber_0"..
           "chamber_3", and "all" = good in every chamber), a CMS-style golden JSON
           {{"RUN": [[first_block, last_block], ...]}}; "times" the same as [start, end) UTC time ranges, which
           history.load(certified="FILE") selects windows with; "good_runs" the runs good for each chamber.
"""

EPILOG = """\
examples:
  dtlive certify list --run 3 --chamber 1
  dtlive certify set --run 3 --chamber 1 --bad --reason "HV trip at 10:02" --by alice
  dtlive certify set --start 2026-12-05T10:00Z --end 2026-12-05T10:05Z --chamber all --good \\
      --reason "rate test misfired on the beam splash" --by bob
  dtlive certify export --out good.json
"""


def add_parser(sub, parents: list[argparse.ArgumentParser] | None = None) -> None:
    """Add ``certify`` and its actions to ``sub`` (an ``add_subparsers()`` result); ``parents``: common options.

    >>> parser = argparse.ArgumentParser(prog="dtlive")
    >>> add_parser(parser.add_subparsers(dest="command"))
    >>> parser.parse_args(["certify", "export", "--out", "good.json"]).out
    'good.json'
    """
    common = {"parents": parents or []}
    c = sub.add_parser("certify", help="good/bad verdicts of runs and lumi blocks per chamber; override; export "
                       "the good ranges as JSON", description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter, **common)
    actions = c.add_subparsers(dest="certify_command", metavar="ACTION")
    ls = actions.add_parser("list", help="runs and lumi blocks with each chamber's verdict, and the overrides",
                            **common)
    ls.add_argument("--run", type=int, help="this detector run only")
    ls.add_argument("--chamber", type=int, choices=range(4), help="this chamber only")
    ls.add_argument("--json", action="store_true", help="JSON instead of tables")
    st = actions.add_parser("set", help="override the verdict of a run or a time range", **common)
    where = st.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", type=int, help="detector run number (its every block)")
    where.add_argument("--start", help="blocks overlapping [START, END): ISO UTC or UNIX seconds")
    st.add_argument("--end", help="with --start: end of the range (default: open, every later block too)")
    st.add_argument("--chamber", required=True, help="chamber number 0-3, or 'all'")
    verdict = st.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--good", dest="good", action="store_true", default=None, help="certify good")
    verdict.add_argument("--bad", dest="good", action="store_false", help="certify bad")
    st.add_argument("--reason", required=True, help="why (kept with the override)")
    st.add_argument("--by", required=True, help="who decides (kept with the override)")
    ex = actions.add_parser("export", help="the good ranges as JSON (golden-JSON style, plus time ranges)",
                            **common)
    ex.add_argument("--out", help="file to write (default: standard output)")
    for p in (ls, st, ex):
        p.add_argument("--processor", help="blocks of this processor (group id); needed only when several were "
                       "judged")
        p.add_argument("--max-status", dest="certify_max_status", type=int, choices=range(5),
                       help=f"worst status still good (default: setting certify_max_status, "
                       f"{Config.certify_max_status})")


def run(args: argparse.Namespace, ledger, cfg: Config) -> int:
    """Run ``dtlive certify ACTION`` on ``ledger`` with the settings ``cfg``; the exit status.

    >>> from dtlive.storage.ledger import Ledger
    >>> parser = argparse.ArgumentParser(prog="dtlive")
    >>> add_parser(parser.add_subparsers(dest="command"))
    >>> run(parser.parse_args(["certify", "list"]), Ledger("sqlite://"), Config())
    (no judged lumi blocks)
    0
    """
    action = getattr(args, "certify_command", None)
    if action == "set":
        return _set(args, ledger)
    if action == "export":
        return _export(args, ledger, cfg)
    if action == "list":
        return _list(args, ledger, cfg)
    print("dtlive certify: choose an action: list, set or export (dtlive certify --help)", file=sys.stderr)
    return 2


def _set(args, ledger) -> int:
    from dtlive.deploy.cli import _time_arg

    chamber = None if str(args.chamber).lower() == "all" else int(args.chamber)
    if chamber is not None and not 0 <= chamber < 4:
        raise ValueError(f"--chamber is 0 to 3 or all, not {args.chamber}")
    if args.end is not None and args.start is None:
        raise ValueError("--end goes with --start")
    oid = ledger.add_override(good=args.good, reason=args.reason, who=args.by, chamber=chamber, run=args.run,
                              start=_time_arg(args.start), end=_time_arg(args.end))
    what = f"run {args.run}" if args.run is not None else f"{args.start} .. {args.end or '(open)'}"
    print(f"override {oid}: {'chamber ' + str(chamber) if chamber is not None else 'every chamber'} of {what} "
          f"certified {'good' if args.good else 'BAD'} by {args.by}: {args.reason}", file=sys.stderr)
    return 0


def _export(args, ledger, cfg: Config) -> int:
    from dtlive.storage import certification

    doc = certification.export(ledger, cfg.certify_max_status, args.processor)
    if args.out:
        path = certification.write(doc, args.out)
        runs = {r for ranges in doc["runs"].values() for r in ranges}
        print(f"wrote the good ranges of {len(runs)} detector run(s) to {path}", file=sys.stderr)
    else:
        print(json.dumps(doc, indent=1))
    return 0


def _list(args, ledger, cfg: Config) -> int:
    from dtlive.core.certification import run_verdicts
    from dtlive.deploy.cli import _table
    from dtlive.storage import certification

    found = [v for v in certification.verdicts(ledger, cfg.certify_max_status, args.processor)
             if (args.run is None or v.run == args.run) and (args.chamber is None or v.chamber == args.chamber)]
    overrides = ledger.overrides()
    if args.json:
        print(json.dumps({"rule": {"max_status": cfg.certify_max_status}, "runs": run_verdicts(found),
                          "blocks": [_block_json(v) for v in found], "overrides": overrides}, default=str, indent=1))
        return 0
    if not found:
        print("(no judged lumi blocks)")
        return 0
    print(f"good: status <= {cfg.certify_max_status} (0 ok .. 4 bad); * = decided by a person; "
          f"processor {found[0].block.processor or '?'}\n")
    runs: dict[int | None, dict] = {}
    for r in run_verdicts(found):
        row = runs.setdefault(r["run"], {"run": r["run"], "blocks": r["blocks"]})
        row[f"chamber_{r['chamber']}"] = "good" if r["good"] else f"BAD ({r['good_blocks']}/{r['blocks']} good)"
    chambers = sorted({v.chamber for v in found})
    cols = [f"chamber_{c}" for c in chambers]
    print("detector runs\n" + _table(list(runs.values()), ["run", "blocks", *cols]) + "\n")
    blocks: dict[int, dict] = {}
    for v in found:
        b = v.block
        row = blocks.setdefault(id(b), {"run": v.run if v.run is not None else "-",
                                        "block": v.number if v.number is not None else "-",
                                        "windows": f"{b.first_window}-{b.last_window}",
                                        "start": _clock(b.start), "end": _clock(b.end)})
        status = "-" if v.status is None else v.status
        row[f"chamber_{v.chamber}"] = f"{'good' if v.good else 'BAD'}{'*' if v.override else ''} ({status})"
    print("lumi blocks\n" + _table(list(blocks.values()), ["run", "block", "windows", "start", "end", *cols]))
    if overrides:
        rows = [{**o, "verdict": "good" if o["good"] else "BAD", "chamber": "all" if o["chamber"] is None
                 else o["chamber"], "at": _clock(o["at"].timestamp())} for o in overrides]
        print("\noverrides (in the order they apply: a later one wins)\n"
              + _table(rows, ["id", "at", "who", "verdict", "chamber", "run", "start", "end", "reason"]))
    return 0


def _block_json(v) -> dict:
    from dtlive.core.messages import iso_utc

    return {"run": v.run, "block": v.number, "chamber": v.chamber, "status": v.status, "automatic": v.automatic,
            "good": v.good, "override": v.override.id if v.override else None, "start": iso_utc(v.block.start),
            "end": iso_utc(v.block.end), "first_window": v.block.first_window, "last_window": v.block.last_window}


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
