"""pkgtool.dockerignore: BuildKit's (moby patternmatcher) .dockerignore semantics."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkgtool.dockerignore import PatternMatcher, parse_dockerignore, read_dockerignore
from pkgtool.errors import UsageError

# (pattern, path, excluded): cases from patternmatcher's own table plus directory rules.
SINGLE = [
    ("**", "file", True),
    ("**", "dir/file", True),
    ("**/", "file", True),
    ("**/**", "dir/file", True),
    ("dir/**", "dir/file", True),
    ("dir/**", "dir/dir2/file", True),
    ("dir/**", "dir", False),
    ("**/dir", "dir", True),
    ("**/dir", "dir/file", True),
    ("**/dir2/*", "dir/dir2/file", True),
    ("**/dir2/**", "dir/dir2/dir3/file", True),
    ("**file", "file", True),
    ("**file", "dir/dir/file", True),
    ("**/file*", "dir/dir/file.txt", True),
    ("**/file*.txt*", "dir/dir/file.txt", True),
    ("**/**/*.txt2", "dir/dir/file.txt", False),
    ("**/*.txt", "file.txt", True),
    ("**/**/*.txt", "file.txt", True),
    ("a**/*.txt", "a/dir/dir/file.txt", True),
    ("a/*.txt", "a/dir/file.txt", False),
    ("a/*.txt", "a/file.txt", True),
    ("a[b-d]e", "ace", True),
    ("a[b-d]e", "aae", False),
    ("a[^b-d]e", "aze", True),
    (".*", ".foo", True),
    (".*", "foo", False),
    ("abc.def", "abcZdef", False),
    ("abc?def", "abcZdef", True),
    ("abc?def", "abcdef", False),
    ("**/.foo", ".foo", True),
    ("**/.foo", "bar.foo", False),
    ("a(b)c/def", "a(b)c/def", True),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "ab", False),
    ("a?b", "a☺b", True),
    ("a?b", "a/b", False),
    ("a*b", "a/b", False),
    ("*", "a/b", True),  # matches the parent "a"
    ("[\\]a]", "]", True),
    ("[x\\-]", "-", True),
    ("[x\\-]", "z", False),
    # A pattern naming a directory excludes everything below it; a trailing / is cleaned.
    ("docs", "docs/sub/README.md", True),
    ("docs/", "docs/README.md", True),
    ("/docs", "docs/README.md", True),
    ("./docs/../docs", "docs/a", True),
    ("docs", "docsx", False),
    ("d?cs", "docs/x/y", True),
]


@pytest.mark.parametrize(("pattern", "path", "excluded"), SINGLE)
def test_single_pattern(pattern: str, path: str, excluded: bool) -> None:
    matcher = PatternMatcher([pattern])
    assert matcher.excluded(path) is excluded
    # The incremental form a walker uses gives the same answer...
    parts = path.split("/")
    info = None
    for i in range(len(parts) - 1):
        _, info = matcher.match_with_parent("/".join(parts[: i + 1]), info)
    assert matcher.match_with_parent(path, info)[0] is excluded
    # ...also without parent information.
    assert matcher.match_with_parent(path, None)[0] is excluded


MULTI = [
    (["**", "!util/docker/web"], "util/docker/web/foo", False),
    (["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", True),
    (["docs", "!docs/README.md"], "docs/README.md", False),
    (["docs", "!docs/README.md"], "docs/other.md", True),
    (["*.go", "!fileutils.go"], "fileutils.go", False),
    # Last match wins: an exception before the pattern does nothing.
    (["!fileutils.go", "*.go"], "fileutils.go", True),
    (["*", "!keep*", "keep-not"], "keep-not", True),
    (["*", "!keep*", "keep-not"], "keep-yes", False),
    (["**/*.log", "!important.log"], "x/important.log", True),
    (["**/*.log", "!**/important.log"], "x/important.log", False),
]


@pytest.mark.parametrize(("patterns", "path", "excluded"), MULTI)
def test_pattern_lists(patterns: list[str], path: str, excluded: bool) -> None:
    assert PatternMatcher(patterns).excluded(path, is_dir=False) is excluded


@pytest.mark.parametrize("bad", ["[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[", "[^", "[^bc", "a[", "!"])
def test_malformed_patterns_are_errors(bad: str) -> None:
    with pytest.raises(UsageError, match="pattern"):
        PatternMatcher([bad])


def test_context_root_is_never_excluded() -> None:
    assert not PatternMatcher(["**", "*"]).excluded(".", is_dir=True)


def test_parse_rules() -> None:
    text = "\ufeff# comment\n  \n/abs/path\n  spaced  \n!  /keep/me/\n a/../b \n #not a comment\nx/**/\n"
    assert parse_dockerignore(text) == ["abs/path", "spaced", "!keep/me", "b", "#not a comment", "x/**"]


def test_read_missing_and_present(tmp_path: Path) -> None:
    assert read_dockerignore(tmp_path) == []
    (tmp_path / ".dockerignore").write_text("*.tmp\n!keep.tmp\n")
    assert read_dockerignore(tmp_path) == ["*.tmp", "!keep.tmp"]


def test_must_descend_follows_fsutil() -> None:
    plain = PatternMatcher(["build", "!build/keep/me.txt"])
    assert plain.must_descend("build")
    assert not plain.must_descend("other")
    # No exceptions: never walk into an excluded dir.
    assert not PatternMatcher(["build"]).must_descend("build")
    # An exception with a wildcard could match anywhere: always descend.
    assert PatternMatcher(["build", "!**/keep.txt"]).must_descend("anything")
    # A trailing /** or /* on the exception is still a plain prefix.
    trailing = PatternMatcher(["*", "!src/**"])
    assert trailing.must_descend("src")
    assert not trailing.must_descend("docs")


def test_may_include_below() -> None:
    inc = PatternMatcher(["a/b/c.txt"])
    assert inc.may_include_below("a")
    assert inc.may_include_below("a/b")
    assert not inc.may_include_below("x")
    assert PatternMatcher(["*/c.txt"]).may_include_below("x")
