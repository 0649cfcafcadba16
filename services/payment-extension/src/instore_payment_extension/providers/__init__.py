"""Payment provider adapters (the port is :mod:`.base`)."""
