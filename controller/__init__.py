"""The Loa controller: FastAPI service, database, MQTT link, health tracker, dispatcher and
scheduler. Entry point: :func:`controller.app.create_app`; CLI: ``loa``."""
