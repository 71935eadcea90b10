"""OASIS CAP 1.2 alerts: parsing and signature checks (``alert``), and what an alert
becomes in the programme (``service``)."""
