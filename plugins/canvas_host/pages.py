"""Built-in HTML: the demo page written into a new root, and the 401 page for browsers."""

from __future__ import annotations

import html

DEMO_INDEX = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Canvas</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem; }
  code { background: #f2f2f2; padding: 0 .25em; border-radius: 3px; }
</style>
</head>
<body>
<h1>Canvas</h1>
<p>This folder is served by the gateway's <code>canvas_host</code> plugin. Replace this
<code>index.html</code> (or add files next to it) and open tabs reload by themselves.</p>
<p>Write a file over HTTP:</p>
<pre><code>curl -X PUT -H "Authorization: Bearer $TOKEN" --data-binary @page.html \\
  http://HOST:PORT{mount}/files/index.html</code></pre>
</body>
</html>
"""

_UNAUTHORIZED = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Canvas: sign in</title></head>
<body style="font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>401: sign in to the canvas</h1>
<p>{message}</p>
<p>Open <code>{mount}/?token=YOUR_GATEWAY_TOKEN</code> once in this browser. The gateway
answers with a session cookie for <code>{mount}</code> and sends you on to the page.</p>
{retry}
</body>
</html>
"""

# A link followed from another site does not carry the SameSite=Strict cookie on the
# redirect that set it; a navigation started by this page does. So retry once per tab.
_RETRY_SCRIPT = """<script>
(() => {
  const k = "canvas-auth-retry", last = Number(sessionStorage.getItem(k) || 0);
  if (Date.now() - last > 10000) { sessionStorage.setItem(k, String(Date.now())); location.replace(location.href); }
})();
</script>"""


def demo_index(mount: str) -> str:
    """The page a freshly created root starts with."""
    return DEMO_INDEX.replace("{mount}", html.escape(mount))


def unauthorized_page(mount: str, message: str, *, retry: bool) -> str:
    """A 401 page that says how to get in (``retry``: reload once, for a fresh cookie)."""
    return _UNAUTHORIZED.format(
        mount=html.escape(mount), message=html.escape(message), retry=_RETRY_SCRIPT if retry else ""
    )
