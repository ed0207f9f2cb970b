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
    # Content is namespaced: a row of ``content`` is a namespace's record of a blob (its size and labels).
    # A root written before records existed has blobs on disk and no rows; ``content.adopt`` marks that
    # they still have to be adopted (hoist.metadata.content.ContentBinding.adopt does it, once).
    """
    ALTER TABLE content ADD COLUMN size INTEGER NOT NULL DEFAULT -1;
    CREATE INDEX content_by_digest ON content (digest);
    CREATE INDEX lease_resources_by_id ON lease_resources (type, id);
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO settings (key, value) VALUES ('content.adopt', 'pending');
    """,
)

#: The schema version this Hoist writes.
SCHEMA_VERSION = len(MIGRATIONS)
