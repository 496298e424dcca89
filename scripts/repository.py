"""The repository's public address and the Binder links made from it: one setting, derived where it can be.

The setting is ``Repository`` under ``[project.urls]`` in ``pyproject.toml``. Where the address can be derived,
it is: from GitHub Actions' ``GITHUB_REPOSITORY``, else from the ``origin`` remote of the git checkout when it is
on GitHub (so a fork's links point at the fork). The README's Binder badge is written from it and the
documentation build uses it for its repository and Binder links.

    python scripts/repository.py            # print the address, where it came from and the Binder link
    python scripts/repository.py --write    # derive it, store it as the setting, rewrite the README's badge
    python scripts/repository.py --check    # exit 1 when the README's badge is not the setting's

>>> github_repository("git@github.com:someone/dtlive.git")
'https://github.com/someone/dtlive'
>>> binder_url("https://github.com/someone/dtlive", "notebooks/01-quickstart.ipynb")
'https://mybinder.org/v2/gh/someone/dtlive/HEAD?labpath=notebooks%2F01-quickstart.ipynb'
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = "notebooks/01-quickstart.ipynb"
BADGE_LOGO = "https://mybinder.org/badge_logo.svg"
_BADGE = re.compile(r"\[!\[Binder\]\(" + re.escape(BADGE_LOGO) + r"\)\]\((?P<url>[^)]*)\)")
_SETTING = re.compile(r'(?m)^(Repository\s*=\s*")([^"]*)(")')


def github_repository(url: str) -> str | None:
    """``https://github.com/OWNER/NAME`` from a GitHub remote address in any of git's forms, else None.

    >>> github_repository("https://github.com/someone/dtlive/"), github_repository("/srv/git/dtlive.git")
    ('https://github.com/someone/dtlive', None)
    """
    m = re.match(r"^(?:git\+)?(?:https?://|ssh://)?(?:[^@/]+@)?github\.com[:/]+([\w.-]+)/([\w.-]+?)(?:\.git)?/?$",
                 url.strip())
    return f"https://github.com/{m.group(1)}/{m.group(2)}" if m else None


def setting(root: Path = ROOT) -> str:
    """The ``Repository`` address under ``[project.urls]`` in ``pyproject.toml``."""
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]["Repository"].rstrip("/")


def derived(root: Path = ROOT, env: dict[str, str] | None = None) -> tuple[str, str] | None:
    """``(address, where from)`` from GitHub Actions or the ``origin`` remote, or None when neither is on GitHub.

    >>> derived(env={"GITHUB_REPOSITORY": "someone/dtlive", "GITHUB_SERVER_URL": "https://github.com"})
    ('https://github.com/someone/dtlive', 'GITHUB_REPOSITORY')
    """
    env = os.environ if env is None else env
    if env.get("GITHUB_REPOSITORY"):
        url = github_repository(f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/{env['GITHUB_REPOSITORY']}")
        if url:
            return url, "GITHUB_REPOSITORY"
    try:
        remote = subprocess.run(["git", "remote", "get-url", "origin"], cwd=root, capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    url = github_repository(remote.stdout) if remote.returncode == 0 else None
    return (url, "git remote origin") if url else None


def repository_url(root: Path = ROOT, env: dict[str, str] | None = None) -> tuple[str, str]:
    """``(address, where from)``: derived where possible (:func:`derived`), else the setting."""
    return derived(root, env) or (setting(root), "pyproject.toml [project.urls] Repository")


def binder_url(repository: str, path: str = QUICKSTART) -> str:
    """The mybinder.org address that opens ``path`` of ``repository`` (on GitHub) in JupyterLab."""
    owner_name = github_repository(repository)
    if owner_name is None:
        raise ValueError(f"Binder builds repositories on GitHub; {repository!r} is not one")
    return f"https://mybinder.org/v2/gh/{owner_name.removeprefix('https://github.com/')}/HEAD?labpath=" + \
        quote(path, safe="")


def badge(repository: str, path: str = QUICKSTART) -> str:
    """The README's Binder badge (Markdown) for ``repository``."""
    return f"[![Binder]({BADGE_LOGO})]({binder_url(repository, path)})"


def readme_badge_url(root: Path = ROOT) -> str | None:
    """The address the README's Binder badge points at, or None without one."""
    m = _BADGE.search((root / "README.md").read_text())
    return m.group("url") if m else None


def write(root: Path = ROOT, env: dict[str, str] | None = None) -> str:
    """Store the derived address as the setting (when there is one) and write the README's badge from it."""
    found = derived(root, env)
    if found:
        pyproject = root / "pyproject.toml"
        text = pyproject.read_text()
        if not _SETTING.search(text):
            raise ValueError(f"{pyproject}: no Repository = \"...\" line under [project.urls]")
        pyproject.write_text(_SETTING.sub(lambda m: m.group(1) + found[0] + m.group(3), text, count=1))
    url = setting(root)
    readme = root / "README.md"
    text = readme.read_text()
    if not _BADGE.search(text):
        raise ValueError(f"{readme}: no Binder badge to rewrite")
    readme.write_text(_BADGE.sub(lambda m: badge(url), text, count=1))
    return url


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="derive the address, store it, rewrite the README's badge")
    p.add_argument("--check", action="store_true", help="exit 1 when the README's badge is not the setting's")
    args = p.parse_args(argv)
    if args.write:
        url = write()
        print(f"repository {url}; README badge -> {binder_url(url)}")
        return 0
    if args.check:
        want, got = binder_url(setting()), readme_badge_url()
        if got != want:
            print(f"README's Binder badge points at {got!r}, the setting at {want!r}: "
                  "run python scripts/repository.py --write", file=sys.stderr)
            return 1
        return 0
    url, source = repository_url()
    print(f"{url} (from {source})\nBinder: {binder_url(url)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
