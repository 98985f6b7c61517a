"""The ``github`` preset: push, issues and pull_request events as one short message.

GitHub names the event in the ``X-GitHub-Event`` header. Events the preset does not
summarise (and the ``ping`` GitHub sends when a webhook is created) are skipped,
which the hook answers with 200 and a reason instead of starting a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_COMMITS_LISTED = 3
MAX_TITLE = 120


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _text(value: Any, limit: int = MAX_TITLE) -> str:
    text = " ".join(str(value).split()) if value is not None else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ref_name(ref: str) -> str:
    for prefix in ("refs/heads/", "refs/tags/"):
        if ref.startswith(prefix):
            kind = "tag " if prefix == "refs/tags/" else ""
            return kind + ref[len(prefix):]
    return ref


def _commit_line(commit: Mapping[str, Any]) -> str:
    """``abc1234 First line of the message``."""
    lines = str(commit.get("message") or "").splitlines()
    return f"{str(commit.get('id') or '')[:7]} {_text(lines[0] if lines else '')}".strip()


def _push(p: Mapping[str, Any], repo: str) -> str:
    ref = _ref_name(str(p.get("ref") or ""))
    who = _get(p, "pusher", "name") or _get(p, "sender", "login") or "someone"
    commits = [c for c in p.get("commits") or [] if isinstance(c, Mapping)]
    if p.get("deleted"):
        return f"push to {repo} {ref} by {who}: branch deleted"
    n = len(commits)
    head = f"push to {repo} {ref} by {who}: {n} commit{'s' if n != 1 else ''}"
    if not commits:
        return head
    listed = [_commit_line(c) for c in commits[:MAX_COMMITS_LISTED]]
    more = f" (+{n - MAX_COMMITS_LISTED} more)" if n > MAX_COMMITS_LISTED else ""
    return f"{head}: {'; '.join(listed)}{more}"


def _issue(p: Mapping[str, Any], repo: str) -> str:
    issue = p.get("issue") or {}
    who = _get(p, "sender", "login") or _get(issue, "user", "login") or "someone"
    action = p.get("action") or "updated"
    line = f"issue #{_get(issue, 'number')} {action} in {repo} by {who}: {_text(_get(issue, 'title'))}"
    url = _get(issue, "html_url")
    return f"{line} ({url})" if url else line


def _pull_request(p: Mapping[str, Any], repo: str) -> str:
    pr = p.get("pull_request") or {}
    who = _get(p, "sender", "login") or _get(pr, "user", "login") or "someone"
    action = p.get("action") or "updated"
    if action == "closed" and pr.get("merged"):
        action = "merged"
    branches = ""
    head, base = _get(pr, "head", "ref"), _get(pr, "base", "ref")
    if head and base:
        branches = f" ({head} -> {base})"
    line = f"pull request #{_get(pr, 'number')} {action} in {repo} by {who}: {_text(_get(pr, 'title'))}{branches}"
    url = _get(pr, "html_url")
    return f"{line} ({url})" if url else line


_SUMMARISERS = {"push": _push, "issues": _issue, "pull_request": _pull_request}


def summarise(event: str, payload: Mapping[str, Any]) -> str | None:
    """One line for a GitHub event, or None when the preset ignores this event."""
    fn = _SUMMARISERS.get(event.strip().lower())
    if fn is None:
        return None
    repo = _get(payload, "repository", "full_name") or "unknown repository"
    return fn(payload, str(repo))


def supported_events() -> list[str]:
    """Event names the preset summarises."""
    return sorted(_SUMMARISERS)
