"""Real-time audio: a live voice from the console and the relay of a radio stream, encoded
once to Opus and carried to the boards as signed, stamped batches (protocol §6.1)."""
