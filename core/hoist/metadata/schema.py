"""The metadata database schema, as numbered migrations applied in order (``PRAGMA user_version``)."""

from __future__ import annotations

#: ``MIGRATIONS[i]`` takes the schema from version ``i`` to ``i + 1``.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE namespaces (
        name        TEXT PRIMARY KEY,
        labels      TEXT NOT NULL DEFAULT '{}',
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE TABLE images (
        namespace   TEXT NOT NULL REFERENCES namespaces(name) ON DELETE RESTRICT,
        name        TEXT NOT NULL,
        media_type  TEXT NOT NULL,
        digest      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        target      TEXT NOT NULL,
        labels      TEXT NOT NULL DEFAULT '{}',
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE INDEX images_by_digest ON images (namespace, digest);
    CREATE TABLE content (
        namespace   TEXT NOT NULL REFERENCES namespaces(name) ON DELETE RESTRICT,
        digest      TEXT NOT NULL,
        labels      TEXT NOT NULL DEFAULT '{}',
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (namespace, digest)
    );
    CREATE TABLE leases (
        namespace   TEXT NOT NULL REFERENCES namespaces(name) ON DELETE RESTRICT,
        id          TEXT NOT NULL,
        labels      TEXT NOT NULL DEFAULT '{}',
        created_at  TEXT NOT NULL,
        PRIMARY KEY (namespace, id)
    );
    CREATE TABLE lease_resources (
        namespace   TEXT NOT NULL,
        lease       TEXT NOT NULL,
        type        TEXT NOT NULL,
        id          TEXT NOT NULL,
        PRIMARY KEY (namespace, lease, type, id),
        FOREIGN KEY (namespace, lease) REFERENCES leases(namespace, id) ON DELETE CASCADE
    );
    """,
    """
    CREATE TABLE containers (
        namespace    TEXT NOT NULL REFERENCES namespaces(name) ON DELETE RESTRICT,
        id           TEXT NOT NULL,
        image        TEXT NOT NULL DEFAULT '',
        snapshotter  TEXT NOT NULL DEFAULT '',
        snapshot_key TEXT NOT NULL DEFAULT '',
        runtime      TEXT NOT NULL,
        status       TEXT NOT NULL,
        pid          INTEGER NOT NULL DEFAULT 0,
        exit_status  INTEGER,
        exited_at    TEXT,
        error        TEXT NOT NULL DEFAULT '',
        labels       TEXT NOT NULL DEFAULT '{}',
        spec         TEXT NOT NULL DEFAULT '{}',
        io           TEXT NOT NULL DEFAULT '{}',
        log_path     TEXT NOT NULL DEFAULT '',
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        PRIMARY KEY (namespace, id)
    );
    """,
)

#: The schema version this Hoist writes.
SCHEMA_VERSION = len(MIGRATIONS)
