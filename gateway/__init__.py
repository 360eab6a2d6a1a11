"""mailgate ground floor: settings, storage, job runtime, HTTP, daemon and CLI."""
