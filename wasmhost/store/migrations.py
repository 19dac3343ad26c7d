"""Versioned schema migrations, one list for every backend.

Each migration is SQL with a few dialect placeholders (`{blob}`, `{real}`, `{serial_pk}`, `{json}`), so SQLite
and PostgreSQL share one history and one version number. Append only: never edit a released step.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "Migration", "render"]

DIALECTS = {
    "sqlite": {"blob": "BLOB", "real": "REAL", "serial_pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "json": "TEXT"},
    "postgresql": {"blob": "BYTEA", "real": "DOUBLE PRECISION", "serial_pk": "BIGSERIAL PRIMARY KEY",
                   "json": "JSONB"},
}


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "namespaces, push config, credentials, devices, outbox, functions", (
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
        """CREATE TABLE namespaces (
            name TEXT PRIMARY KEY,
            created_at {real} NOT NULL
        )""",
        """CREATE TABLE push_config (
            namespace TEXT PRIMARY KEY REFERENCES namespaces(name) ON DELETE CASCADE,
            ntfy_base_url TEXT NOT NULL DEFAULT '',
            ntfy_auth_token_sealed TEXT NOT NULL DEFAULT '',
            expo_access_token_sealed TEXT NOT NULL DEFAULT '',
            updated_at {real} NOT NULL
        )""",
        """CREATE TABLE push_credentials (
            namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
            provider TEXT NOT NULL,
            document_sealed TEXT NOT NULL,
            updated_at {real} NOT NULL,
            PRIMARY KEY (namespace, provider)
        )""",
        """CREATE TABLE devices (
            id TEXT PRIMARY KEY,
            namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
            user_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            token_sealed TEXT NOT NULL,
            token_fp TEXT NOT NULL,
            platform TEXT NOT NULL DEFAULT '',
            app_version TEXT NOT NULL DEFAULT '',
            created_at {real} NOT NULL,
            updated_at {real} NOT NULL,
            UNIQUE (namespace, user_id, device_id)
        )""",
        "CREATE INDEX devices_by_user ON devices (namespace, user_id)",
        "CREATE INDEX devices_by_fp ON devices (namespace, token_fp)",
        """CREATE TABLE outbox (
            id {serial_pk},
            namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
            user_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            message_json TEXT NOT NULL,
            delivered_at {real} NOT NULL
        )""",
        "CREATE INDEX outbox_by_namespace ON outbox (namespace, id)",
        """CREATE TABLE functions (
            namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
            name TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            module {blob} NOT NULL,
            limits_json TEXT NOT NULL,
            created_at {real} NOT NULL,
            updated_at {real} NOT NULL,
            PRIMARY KEY (namespace, name)
        )""",
    )),
    Migration(2, "namespace API keys and end-user token verification settings", (
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
            key_hash TEXT NOT NULL UNIQUE,
            created_at {real} NOT NULL
        )""",
        "CREATE INDEX api_keys_by_namespace ON api_keys (namespace)",
        """CREATE TABLE namespace_auth (
            namespace TEXT PRIMARY KEY REFERENCES namespaces(name) ON DELETE CASCADE,
            settings_sealed TEXT NOT NULL,
            updated_at {real} NOT NULL
        )""",
    )),
    Migration(3, "recent invocations per function and per-minute usage counters (store/activity.py)", (
        """CREATE TABLE invocations (
            id {serial_pk},
            namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
            function TEXT NOT NULL,
            at {real} NOT NULL,
            outcome TEXT NOT NULL,
            record_json TEXT NOT NULL
        )""",
        "CREATE INDEX invocations_by_function ON invocations (namespace, function, id)",
        "CREATE INDEX invocations_by_age ON invocations (at)",
        """CREATE TABLE usage_minutes (
            namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
            minute BIGINT NOT NULL,
            metric TEXT NOT NULL,
            label TEXT NOT NULL,
            count BIGINT NOT NULL,
            total_ms {real} NOT NULL,
            PRIMARY KEY (namespace, minute, metric, label)
        )""",
        "CREATE INDEX usage_by_minute ON usage_minutes (minute)",
    )),
    Migration(4, "durable sends and their per-device deliveries", (
        """CREATE TABLE sends (
            id TEXT PRIMARY KEY,
            namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
            user_id TEXT NOT NULL,
            message_json TEXT NOT NULL,
            idempotency_key TEXT,
            message_hash TEXT NOT NULL,
            created_at {real} NOT NULL,
            expires_at {real} NOT NULL
        )""",
        "CREATE UNIQUE INDEX sends_by_key ON sends (namespace, idempotency_key)",
        "CREATE INDEX sends_by_user ON sends (namespace, user_id, created_at)",
        "CREATE INDEX sends_by_age ON sends (created_at)",
        """CREATE TABLE deliveries (
            id TEXT PRIMARY KEY,
            send_id TEXT NOT NULL REFERENCES sends(id) ON DELETE CASCADE,
            namespace TEXT NOT NULL,
            device_row_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at {real} NOT NULL,
            lease_owner TEXT NOT NULL DEFAULT '',
            lease_until {real} NOT NULL DEFAULT 0,
            status INTEGER NOT NULL DEFAULT 0,
            reason TEXT NOT NULL DEFAULT '',
            error TEXT NOT NULL DEFAULT '',
            updated_at {real} NOT NULL
        )""",
        "CREATE INDEX deliveries_by_send ON deliveries (send_id)",
        "CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at)",
        "CREATE INDEX deliveries_leased ON deliveries (state, lease_until)",
        "CREATE INDEX deliveries_by_namespace ON deliveries (namespace, state)",
    )),
    Migration(5, "tenant webhooks and their durable events (store/webhooks.py)", (
        """CREATE TABLE webhooks (
            namespace TEXT PRIMARY KEY REFERENCES namespaces(name) ON DELETE CASCADE,
            url TEXT NOT NULL,
            events TEXT NOT NULL,
            secret_sealed TEXT NOT NULL,
            created_at {real} NOT NULL,
            updated_at {real} NOT NULL,
            disabled_at {real} NOT NULL DEFAULT 0,
            disabled_reason TEXT NOT NULL DEFAULT '',
            failing_since {real} NOT NULL DEFAULT 0,
            failures INTEGER NOT NULL DEFAULT 0,
            last_success_at {real} NOT NULL DEFAULT 0,
            last_failure_at {real} NOT NULL DEFAULT 0,
            last_error TEXT NOT NULL DEFAULT ''
        )""",
        """CREATE TABLE webhook_events (
            id TEXT PRIMARY KEY,
            namespace TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
            event TEXT NOT NULL,
            send_id TEXT NOT NULL,
            delivery_id TEXT NOT NULL DEFAULT '',
            user_id TEXT NOT NULL DEFAULT '',
            device_id TEXT NOT NULL DEFAULT '',
            provider TEXT NOT NULL DEFAULT '',
            delivery_state TEXT NOT NULL DEFAULT '',
            status INTEGER NOT NULL DEFAULT 0,
            reason TEXT NOT NULL DEFAULT '',
            error TEXT NOT NULL DEFAULT '',
            counts_json TEXT NOT NULL DEFAULT '',
            occurred_at {real} NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at {real} NOT NULL,
            lease_owner TEXT NOT NULL DEFAULT '',
            lease_until {real} NOT NULL DEFAULT 0,
            last_status INTEGER NOT NULL DEFAULT 0,
            last_error TEXT NOT NULL DEFAULT '',
            updated_at {real} NOT NULL
        )""",
        "CREATE INDEX webhook_events_due ON webhook_events (state, next_attempt_at)",
        "CREATE INDEX webhook_events_by_namespace ON webhook_events (namespace, state, occurred_at)",
        "CREATE INDEX webhook_events_by_age ON webhook_events (updated_at)",
    )),
    Migration(6, "receipts awaited on deliveries (Expo): the receipt id and when its ticket came", (
        "ALTER TABLE deliveries ADD COLUMN receipt_id TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE deliveries ADD COLUMN receipt_at {real} NOT NULL DEFAULT 0",
    )),
    Migration(7, "fleet-wide per-namespace caps: the send bucket and invocation slot leases (store/fleetcaps.py)", (
        # No foreign keys: a row is a few bytes of counters, written only by `PgCapLedger`, and a cap
        # must not fail because a namespace was deleted while a gateway still held its key.
        """CREATE TABLE namespace_send_tokens (
            namespace TEXT PRIMARY KEY,
            tokens {real} NOT NULL,
            stamp {real} NOT NULL,
            granted INTEGER NOT NULL
        )""",
        """CREATE TABLE namespace_slot_leases (
            namespace TEXT PRIMARY KEY,
            leases {json} NOT NULL
        )""",
    )),
    # Every index a row is in is one more page its commit writes (`bench.delivery`'s `accept_pages`;
    # bench/README.md, "Durable delivery"). Partial indexes hold only the rows their readers look for, so
    # a delivered row is in none of the queue's. A reader's WHERE must repeat an index's condition word for
    # word: SQLite proves no more than that (``state = 'queued'`` does not imply ``state IN ('queued', ...)``).
    # `sends_by_key` stays whole: a gateway of the previous release, still running while the fleet is
    # upgraded, names it in ``ON CONFLICT (namespace, idempotency_key)``, which a partial index does not serve.
    Migration(8, "the queue's indexes hold only the rows their readers look for", (
        "DROP INDEX deliveries_due",
        "DROP INDEX deliveries_leased",
        "DROP INDEX deliveries_by_namespace",
        "CREATE INDEX deliveries_queued ON deliveries (next_attempt_at) WHERE state = 'queued'",
        "CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE state = 'sending'",
        "CREATE INDEX deliveries_sent ON deliveries (next_attempt_at) WHERE state = 'sent'",
        "CREATE INDEX deliveries_unfinished ON deliveries (namespace, send_id)"
        " WHERE state IN ('queued', 'sending', 'sent')",
    )),
)


def render(migration: Migration, dialect: str) -> list[str]:
    """The migration's statements for one backend."""
    names = DIALECTS[dialect]
    return [s.format(**names) for s in migration.statements]
