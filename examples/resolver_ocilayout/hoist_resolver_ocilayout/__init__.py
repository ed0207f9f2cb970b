"""A third-party Hoist resolver for OCI image layouts on disk (``oci-layout:`` and ``oci-archive:`` references)."""
