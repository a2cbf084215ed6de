"""control_plane: the service that runs inside the appliance's control-plane image.

Health, status, update check and apply, through ``consumer``.
"""
