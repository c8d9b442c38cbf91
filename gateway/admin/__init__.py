"""Administration: team keys, team settings, admin authentication, the store's layout upgrade."""
