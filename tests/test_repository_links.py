"""The repository's address is one setting (derived from git or GitHub Actions where it can be), and the
README's Binder badge and the documentation's links are made from it: no placeholder to edit."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("repository", ROOT / "scripts" / "repository.py")
repository = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(repository)


def test_the_readme_badge_is_the_settings_and_opens_an_existing_notebook():
    url = repository.setting()
    assert repository.github_repository(url) == url  # a real GitHub address, no placeholder
    assert "OWNER" not in (ROOT / "README.md").read_text()
    badge = repository.readme_badge_url()
    assert badge == repository.binder_url(url)
    assert badge.endswith("?labpath=notebooks%2F01-quickstart.ipynb") and (ROOT / repository.QUICKSTART).is_file()
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "repository.py"), "--check"], capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("remote", ["git@github.com:someone/dtlive.git", "https://github.com/someone/dtlive.git",
                                    "https://github.com/someone/dtlive", "ssh://git@github.com/someone/dtlive.git",
                                    "https://user@github.com/someone/dtlive/"])
def test_every_form_of_a_github_remote_gives_the_same_address(remote):
    assert repository.github_repository(remote) == "https://github.com/someone/dtlive"


@pytest.mark.parametrize("remote", ["/srv/git/dtlive.git", "https://gitlab.com/someone/dtlive.git",
                                    "https://github.com/someone", "git@example.org:github.com/x/y.git"])
def test_what_is_not_a_github_repository_is_not_taken_for_one(remote):
    assert repository.github_repository(remote) is None


def _copy(tmp_path: Path, remote: str | None) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, repo / name)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, timeout=30)
    if remote:
        subprocess.run(["git", "remote", "add", "origin", remote], cwd=repo, check=True, timeout=30)
    return repo


def test_write_derives_the_address_from_the_github_remote_and_rewrites_setting_and_badge(tmp_path):
    repo = _copy(tmp_path, "git@github.com:detector-group/dtlive.git")
    assert repository.repository_url(repo, env={}) == ("https://github.com/detector-group/dtlive",
                                                       "git remote origin")
    assert repository.write(repo, env={}) == "https://github.com/detector-group/dtlive"
    assert repository.setting(repo) == "https://github.com/detector-group/dtlive"
    assert repository.readme_badge_url(repo) == \
        "https://mybinder.org/v2/gh/detector-group/dtlive/HEAD?labpath=notebooks%2F01-quickstart.ipynb"
    readme = (repo / "README.md").read_text()
    assert readme.replace("detector-group/dtlive", "X") == \
        (ROOT / "README.md").read_text().replace(repository.setting().removeprefix("https://github.com/"), "X")


def test_without_a_github_remote_the_setting_is_used_and_nothing_changes(tmp_path):
    repo = _copy(tmp_path, "/srv/git/dtlive.git")
    assert repository.repository_url(repo, env={}) == (repository.setting(), "pyproject.toml [project.urls] Repository")
    before = (repo / "pyproject.toml").read_text(), (repo / "README.md").read_text()
    repository.write(repo, env={})
    assert ((repo / "pyproject.toml").read_text(), (repo / "README.md").read_text()) == before


def test_github_actions_names_the_repository_it_builds(tmp_path):
    repo = _copy(tmp_path, None)
    env = {"GITHUB_REPOSITORY": "fork-owner/dtlive", "GITHUB_SERVER_URL": "https://github.com"}
    assert repository.repository_url(repo, env=env) == ("https://github.com/fork-owner/dtlive", "GITHUB_REPOSITORY")
