"""OpenAI's Conversations API on the kernel's sessions: a conversation *is* a session.

``POST /v1/conversations`` makes a session whose key is its id (``conv_...``);
``conversation`` on ``POST /v1/responses`` runs the turn on that session, so the
kernel loads its items, serialises turns with the session lock and appends the
turn's input and output exactly once. A session made by a key (``x-session-key``,
``user``, a webhook's main session) is the same thing addressed by name, and the
conversation endpoints accept that name as the id.

Modules: :mod:`.wire` (items and objects in the openai SDK's shapes),
:mod:`.params` (request validation), :mod:`.service` (the endpoints),
:mod:`.turns` (the ``conversation`` parameter of ``POST /v1/responses``).
"""
