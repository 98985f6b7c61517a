"""The github preset's one-line summaries."""

from __future__ import annotations

from plugins.hooks.github import summarise, supported_events

REPO = {"repository": {"full_name": "owner/repo"}}


def commits(n: int) -> list[dict]:
    return [{"id": f"{i:07d}ffff", "message": f"Change {i}\n\nbody"} for i in range(n)]


def test_push_variants():
    base = {**REPO, "ref": "refs/heads/main", "pusher": {"name": "alice"}}
    assert summarise("push", {**base, "commits": commits(1)}) == (
        "push to owner/repo main by alice: 1 commit: 0000000 Change 0"
    )
    assert summarise("push", {**base, "commits": commits(5)}) == (
        "push to owner/repo main by alice: 5 commits: 0000000 Change 0; 0000001 Change 1; 0000002 Change 2 (+2 more)"
    )
    assert summarise("push", {**base, "ref": "refs/tags/v1.2", "commits": []}) == (
        "push to owner/repo tag v1.2 by alice: 0 commits"
    )
    assert summarise("push", {**base, "deleted": True}) == "push to owner/repo main by alice: branch deleted"
    assert summarise("push", {"ref": "refs/heads/x", "sender": {"login": "bot"}}) == (
        "push to unknown repository x by bot: 0 commits"
    )


def test_issue_and_pull_request():
    issue = {**REPO, "action": "closed", "sender": {"login": "bob"},
             "issue": {"number": 7, "title": "A  very\nlong   title " + "x" * 200}}
    line = summarise("issues", issue)
    assert line.startswith("issue #7 closed in owner/repo by bob: A very long title xxx")
    assert line.endswith("…") and len(line) < 200 and "\n" not in line
    pr = {**REPO, "action": "opened", "pull_request": {"number": 3, "title": "Docs", "user": {"login": "dan"},
                                                      "head": {"ref": "docs"}, "base": {"ref": "main"}}}
    assert summarise("pull_request", pr) == "pull request #3 opened in owner/repo by dan: Docs (docs -> main)"
    pr["action"] = "closed"
    assert summarise("pull_request", pr).startswith("pull request #3 closed")  # closed without merging


def test_unhandled_events():
    assert summarise("ping", {"zen": "x"}) is None
    assert summarise("", REPO) is None
    assert summarise(" Push ", {**REPO, "ref": "refs/heads/m", "commits": []}) is not None
    assert supported_events() == ["issues", "pull_request", "push"]
