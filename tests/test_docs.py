# test_docs.py: every repository path that a comment, docstring or document names exists: paths
# that begin with a top-level directory of the repository (tests/, tools/, cpp/, python/, ...;
# shell globs match at least one file) and top-level documents written as bare upper-case names
# (FORMAT.md). Paths that git ignores (build outputs, converted models, caches) are exempt, and so
# are references into ../shared, which are written as such.
import fnmatch
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO


def git(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, input=stdin, capture_output=True, text=True)


@pytest.fixture(scope="module")
def repo_files() -> set:
    """The repository's files: tracked ones and new ones that git does not ignore."""
    try:
        listed = git("ls-files", "--cached", "--others", "--exclude-standard", "-z")
    except OSError as e:
        pytest.skip(f"needs git: {e}")
    if listed.returncode != 0:
        pytest.skip(f"needs a git checkout of the repository: {listed.stderr.strip()}")
    return {name for name in listed.stdout.split("\0") if name and (REPO / name).is_file()}


def text_of(name: str) -> str:
    """The file's text ("" for a binary file)."""
    data = (REPO / name).read_bytes()
    try:
        return "" if b"\0" in data else data.decode("utf-8")
    except UnicodeDecodeError:
        return ""


def named_paths(text: str, top_dirs: set):
    """(line number, path) of each repository path the text names."""
    tops = "|".join(re.escape(d) for d in sorted(top_dirs))
    # Not part of a longer path (../shared/tests/..., $DIR/tools, a URL) nor of a word.
    path = re.compile(rf"(?<![\w./~$-])(?:{tops})/(?:[\w.*/-]*[\w*])?")
    document = re.compile(r"(?<![\w./~$-])[A-Z][A-Z0-9_]*\.md\b")
    for number, line in enumerate(text.splitlines(), 1):
        for match in (*path.finditer(line), *document.finditer(line)):
            yield number, match.group(0)


def exists(ref: str, base: str, files: set, dirs: set) -> bool:
    if any(c in ref for c in "*?["):
        return any(fnmatch.fnmatchcase(f, ref) for f in files)
    if "/" not in ref:  # a bare document name: at the top level or beside the file naming it
        return ref in files or str(Path(base).parent / ref) in files
    return ref.rstrip("/") in files | dirs


def test_named_repository_paths_exist(repo_files):
    dirs = {str(parent) for name in repo_files for parent in Path(name).parents if str(parent) != "."}
    top_dirs = {name.split("/", 1)[0] for name in repo_files if "/" in name}
    missing = []
    for name in sorted(repo_files):
        for number, ref in named_paths(text_of(name), top_dirs):
            if not exists(ref, name, repo_files, dirs):
                missing.append((f"{name}:{number}", ref))
    # Asked as a file and as a directory: a pattern such as tests/.cache/ matches directories only.
    asked = [name for _, ref in missing for name in (ref, ref.rstrip("/") + "/")]
    ignored = set(git("check-ignore", "--stdin", stdin="\n".join(asked)).stdout.splitlines())
    stale = [f"{where}: {ref}" for where, ref in missing if not {ref, ref.rstrip("/") + "/"} & ignored]
    assert not stale, "named paths that do not exist:\n" + "\n".join(stale)
