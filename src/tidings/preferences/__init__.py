"""Recipients' choices (which categories reach them, on which channels, how often, and
when not), a tenant's defaults under them, and the APIs to set both."""
