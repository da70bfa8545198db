"""Rule bundles: loading, compiling, testing, signing, storing and serving them.

- ``query/``: the query language (lexer, parser, AST, compiler to closures)
- ``sigma``: Sigma rules (pySigma) translated into the same AST
- ``ruleset``: compiled rules and the index by action / literal / substring
- ``bundle``: ``load_bundle(path) -> Bundle`` (model types in ``model``)
- ``testing``: a bundle's embedded tests
- ``archive``, ``signing``: deterministic archives, ed25519 signatures and keys
- ``store``: installed versions, active bundle, rollback
- ``admin``: the authenticated ZeroMQ admin endpoint and its client
- ``cli``: ``threatseer rules ...`` and ``threatseer keys ...``

The bundle format and the query language are described in rules/README.md.
"""
