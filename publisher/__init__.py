"""publisher: the CI side of appliance-release.

Pack and push charts, the Flux config bundle and the control-plane image; assemble,
sign and push the release manifest; promote channels; audit and mirror registries.
Imports ``consumer`` and ``ocicore``.
"""
