"""The operator listing honours keys marked ``admin = true``."""

from __future__ import annotations


async def test_a_key_marked_admin_lists_every_keys_responses(tmp_path):
    from kernel.testing import build_app, default_config, merge

    config = merge(default_config(tmp_path / "state"), {
        "plugins": {"openresponses": {"enabled": True}},
        "kernel": {"auth": {"keys": {"ops": {"secret": "ops-secret-0123456789", "admin": True},
                                     "dev": {"secret": "dev-secret-0123456789"}}}}})
    app = build_app(config, tmp_path / "plugins.toml")
    client = app.test_client()
    async with app.test_app():
        made = await client.post("/v1/responses", json={"input": "mine"},
                                 headers={"Authorization": "Bearer dev-secret-0123456789"})
        assert made.status_code == 200
        rid = (await made.get_json())["id"]
        as_ops = await client.get("/-/responses", headers={"Authorization": "Bearer ops-secret-0123456789"})
        assert rid in [r["id"] for r in (await as_ops.get_json())["data"]]
        as_dev = await client.get("/-/responses", headers={"Authorization": "Bearer dev-secret-0123456789"})
        assert rid in [r["id"] for r in (await as_dev.get_json())["data"]]
        other = merge(config, {"kernel": {"auth": {"keys": {"ops": {"admin": False}}}}})
    app2 = build_app(other, tmp_path / "plugins2.toml")
    client2 = app2.test_client()
    async with app2.test_app():
        as_ops = await client2.get("/-/responses", headers={"Authorization": "Bearer ops-secret-0123456789"})
        assert rid not in [r["id"] for r in (await as_ops.get_json())["data"]]
