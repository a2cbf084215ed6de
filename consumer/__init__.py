"""consumer: the release domain as the appliance sees it.

Release manifest models, resolve, verify, anti-rollback state, install plan and
offline reconcile. Imports only ``ocicore`` (and small third-party libraries);
this package plus ``ocicore`` is all the control-plane image needs.
"""
