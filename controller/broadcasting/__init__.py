"""Bulletins from request to proof: scheduling, targeting, the programme, dispatch,
content serving, delivery reports, referral from the province."""
