"""Conformance suites that any plugin implementation runs against itself.

Each suite is a pytest test class: subclass it in a test module and provide the fixtures it names.
``hoist.testing.content.ContentStoreSuite`` checks a ``hoist.content.v1`` store.
"""
