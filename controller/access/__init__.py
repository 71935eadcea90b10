"""Who may do what where: accounts and tokens, jurisdiction over areas, the broadcast
policy (quiet hours, volume caps, approval), the command-signing key."""
