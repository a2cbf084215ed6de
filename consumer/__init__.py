"""consumer: the release domain as the appliance sees it.

Imports only ``ocicore`` (and small third-party libraries); this package plus
``ocicore`` is all the control-plane image needs. Public API:

- ``consumer.manifest``: release manifest v1 (tolerant reader, strict writer, schema).
- ``consumer.resolve.Resolver``: channel/version/digest → ``ResolvedRelease`` (verified
  bytes, signature binding, anti-rollback); ``consumer.signatures`` holds the pure trust
  rules, ``consumer.state`` the atomic anti-rollback state.
- ``consumer.verify.verify_release``: every pinned artifact is in the registry as locked.
- ``consumer.site`` (site settings), ``consumer.plan.plan_install`` (the objects),
  ``consumer.render`` (render, apply with kubectl, diff), ``consumer.kube`` (in-cluster
  server-side apply), ``consumer.reconcile.reconcile_offline`` (what would run).
- ``consumer.tools``: the helm and kubectl wrappers; ``consumer.cli``: the CLI.
"""
