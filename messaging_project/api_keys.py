"""Say which API keys the server takes and where they are; ``make run`` prints it as it starts.

    python -m messaging_project.api_keys

Read from the environment as the settings read it (``messaging_project.env``).
"""

from messaging_project.env import (
    ApiKey,
    admin_api_key,
    client_api_key,
    env_bool,
    env_str,
    stop_on_bad_configuration,
)


def _where(key: ApiKey) -> str:
    if key.source.endswith("_FILE"):
        return f"in {env_str(key.source)}"
    return f"from {key.source}"


def describe(*, client: ApiKey, admin: ApiKey, open_routes: bool, base_url: str) -> list[str]:
    """Lines that say what opens the API, where each key is, and how to send one."""
    if open_routes:
        lines = ["Client routes: open to anyone (SESSIONS_OPEN_CLIENT_ROUTES is on)."]
    elif client.value:
        lines = [f"Client key: {_where(client)} (clients send it as X-API-KEY)."]
    else:
        lines = ["Client key: none; the client routes take the admin key or a staff user."]
    if not admin.value:
        return [*lines, "Admin key: none; the session list takes a staff user."]
    lines.append(f"Admin key: {_where(admin)} (every route, the session list included).")
    if admin.source.endswith("_FILE"):
        key = f"$(cat {env_str(admin.source)})"
        lines.append(f'  curl -H "X-API-KEY: {key}" {base_url}/api/messaging/sessions')
    return lines


def main() -> None:
    with stop_on_bad_configuration():
        open_routes = env_bool("SESSIONS_OPEN_CLIENT_ROUTES", False)
        admin = admin_api_key()
        client = client_api_key(admin_key=admin, open_routes=open_routes)
    host = env_str("HOST") or "127.0.0.1"
    address = f"[{host}]" if ":" in host else host
    base_url = f"http://{address}:{env_str('PORT') or '3000'}"
    lines = describe(client=client, admin=admin, open_routes=open_routes, base_url=base_url)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
