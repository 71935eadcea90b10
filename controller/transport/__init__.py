"""The link to the MQTT broker: the ``Link`` interface, its MQTT and in-memory
implementations, and the embedded broker for machines without one."""
